"""`SpeechGenerationPipeline`: text-to-speech and speech continuation with a jepatok speech LM (arXiv 2512.07168).

Inputs are turned into prompts with the tokenizer's templates (TTS: `<bos> <text> text-ids <audio>`, optionally
followed by a voice prompt's audio ids; continuation: `<bos> <audio> prompt-audio-ids`), completed by
`model.generate` (sampling with temperature / top-k / top-p, KV cache on) under the frame-grammar
`FrameGrammarLogitsProcessor`, and decoded through the codec (`tokenizer.batch_decode_audio`) to a waveform at
the codec's sampling rate. A list of inputs is generated in left-padded batches of `batch_size`.

Registration (`register_pipelines`, run on `import jepatok`): the `speech-continuation` task is ours. In
transformers 5.23 `text-to-speech` is an alias of `text-to-audio` (TextToAudioPipeline, for Bark/VITS/...), so
registering `text-to-speech` would never be reached; instead the `text-to-audio` entry gets a dispatcher that
builds a `SpeechGenerationPipeline` when the tokenizer is a jepatok speech tokenizer (or the model carries the
`jepatok` config key) and the stock `TextToAudioPipeline` otherwise, and `AutoModelForCausalLM` is appended to
the task's model classes so `pipeline("text-to-speech", model=LM_DIR)` loads our LM from a directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessorList, Pipeline

from .guidance import TextGuidanceLogitsProcessor, check_guidance_scale, unconditional_prompt
from .logits import (
    FrameGrammar,
    FrameGrammarLogitsProcessor,
    InterleavedTextLogitsProcessor,
    check_frame_grammar,
)
from .modeling import check_lm_tokenizer, is_frame_lm, lm_reading_rate, tts_layout

CONTINUATION_TASK = "speech-continuation"
#: An interleaved LM reads its text on a schedule of `reading_rate` pieces per frame (by default the rate it
#: recorded from its training data): before frame t it has read round((t + 1) * rate) pieces, give or take
#: `reading_slack`, within which the LM itself decides when to read (a large slack leaves it all to the LM).
DEFAULT_READING_SLACK = 0


@dataclass
class SpeechPrompt:
    """A prepared generation prompt."""

    input_ids: list[int]  # [S]
    kind: str  # "tts" or "continuation"
    prompt_audio_tokens: int  # audio ids already in the prompt (voice prompt / continuation prefix)
    text: str | None = None  # the TTS text as given (None for continuation and ready input_ids)


def is_speech_tokenizer(tokenizer) -> bool:
    """Whether `tokenizer` offers the jepatok speech-tokenizer interface (interfaces.md)."""
    needed = (
        "audio_offset",
        "tokens_per_frame",
        "slot_sizes",
        "audio_token_id",
        "codes_to_ids",
        "decode_audio",
    )
    return tokenizer is not None and all(hasattr(tokenizer, a) for a in needed)


class SpeechGenerationPipeline(Pipeline):
    """Text-to-speech / speech continuation with a causal LM over jepatok ids.

    Build with `pipeline("text-to-speech", model=LM, tokenizer=TOK)` or `pipeline("speech-continuation", ...)`
    (LM and TOK may be directories), or directly `SpeechGenerationPipeline(model=lm, tokenizer=tok)`.

    Call with a string (TTS), `{"text": str}`, `{"audio": waveform, "sampling_rate": sr}` (continuation),
    `{"text": str, "audio": ..., "sampling_rate": ...}` (TTS continuing a voice prompt), `{"input_ids": [...]}`
    (a ready prompt), or a list of those (batched).

    Args (call-time or construction-time):
        temperature (float, 1.0), top_k (int, 50), top_p (float, 1.0): sampling; do_sample (bool, True).
        max_seconds (float, 10.0): audio generated at most (whole frames; `<eos>` is forced after).
        min_frames (int, 1): frames before `<eos>` is allowed.
        seed (int | None): seeds torch before each batch for reproducible sampling.
        guidance_scale (float, 1.0): classifier-free guidance toward the text (`jepatok.lm.guidance`): each step
            also runs the LM on the prompt without its text and samples from uncond + w * (cond - uncond);
            1 is off, > 1 follows the text more closely; continuation prompts (no text) are unaffected.
        num_candidates (int, 1): best-of-N text-to-speech (`jepatok.lm.rerank`): each TTS prompt is sampled N
            times and the candidate whose codes best spell the text's phonemes under `phoneme_scorer` is kept;
            continuation prompts are sampled once.
        phoneme_scorer (PhonemeScorer | directory | "small"): the scorer for num_candidates > 1 (required then);
            it must have been trained on the tokenizer codec's codes (`jepatok probe-phonemes --save-scorer`);
            "small" is the one shipped with the `small` checkpoint.
        rerank_metric ("per" | "nll", "per"): what ranks the candidates: the phoneme error rate of the scorer's
            greedy transcript against the text, or the CTC NLL of the text's phonemes.
        batch_size (int, 8): prompts per `generate` call for list inputs (each TTS prompt counts N times).
        include_prompt_audio (bool, False): the returned audio starts with the prompt's audio.
    Returns: per input, `{"audio": np.ndarray float32 [L], "sampling_rate": int, "ids": list[int]}` where
        `ids` are the generated ids (audio ids, then `<eos>` when the LM ended the utterance); with
        num_candidates > 1 a TTS result also has `"candidate_scores"` (each candidate's `rerank_metric`, lower
        is better) and `"chosen"` (the kept candidate's index).
    """

    _pipeline_calls_generate = False  # we pass generation arguments ourselves (see _forward)
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not is_speech_tokenizer(self.tokenizer):
            raise ValueError(
                f"SpeechGenerationPipeline needs a JepaSpeechTokenizer, got {type(self.tokenizer).__name__}"
            )
        check_lm_tokenizer(self.model, self.tokenizer)
        self.grammar = FrameGrammar.from_tokenizer(self.tokenizer, vocab_size=self.model.config.vocab_size)

    # --- parameters -------------------------------------------------------------------------------------
    def _sanitize_parameters(
        self,
        temperature=None,
        top_k=None,
        top_p=None,
        do_sample=None,
        max_seconds=None,
        min_frames=None,
        seed=None,
        guidance_scale=None,
        num_candidates=None,
        phoneme_scorer=None,
        rerank_metric=None,
        reading_rate=None,
        reading_slack=None,
        include_prompt_audio=None,
        sampling_rate=None,
        **kwargs,
    ):
        if kwargs:
            raise ValueError(f"unknown SpeechGenerationPipeline arguments {sorted(kwargs)}")
        pre = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        fwd = {
            k: v
            for k, v in dict(
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                do_sample=do_sample,
                max_seconds=max_seconds,
                min_frames=min_frames,
                seed=seed,
                guidance_scale=None if guidance_scale is None else check_guidance_scale(guidance_scale),
                num_candidates=None if num_candidates is None else check_num_candidates(num_candidates),
                phoneme_scorer=phoneme_scorer,
                rerank_metric=None if rerank_metric is None else check_rerank_metric(rerank_metric),
                reading_rate=None if reading_rate is None else check_reading_rate(reading_rate),
                reading_slack=None if reading_slack is None else check_reading_slack(reading_slack),
            ).items()
            if v is not None
        }
        post = {} if include_prompt_audio is None else {"include_prompt_audio": include_prompt_audio}
        return pre, fwd, post

    # --- steps ---------------------------------------------------------------------------------------------
    def preprocess(self, inputs: Any, sampling_rate: int | None = None) -> SpeechPrompt:
        tok = self.tokenizer
        if isinstance(inputs, str):
            inputs = {"text": inputs}
        if not isinstance(inputs, dict):
            raise ValueError(
                "inputs must be a text string or a dict with 'text' and/or 'audio' (+ 'sampling_rate') or "
                f"'input_ids', got {type(inputs).__name__}"
            )
        if "input_ids" in inputs:
            ids = [int(i) for i in inputs["input_ids"]]
            if tok.audio_token_id not in ids:
                raise ValueError("a ready prompt (input_ids) must contain the <audio> token")
            audio_tokens = len(ids) - 1 - ids[::-1].index(tok.audio_token_id)
            return SpeechPrompt(ids, "tts" if tok.text_token_id in ids else "continuation", audio_tokens)
        text, audio = inputs.get("text"), inputs.get("audio")
        if text is None and audio is None:
            raise ValueError("inputs need 'text' (text-to-speech) and/or 'audio' (a prompt to continue)")
        audio_ids: list[int] = []
        if audio is not None:
            sr = inputs.get("sampling_rate", sampling_rate)
            audio_ids = list(tok.encode_audio(audio, sampling_rate=sr))
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text must be a non-empty string, got {text!r}")
            return SpeechPrompt(tts_prompt_ids(tok, text) + audio_ids, "tts", len(audio_ids), text)
        if not audio_ids:
            raise ValueError("the prompt audio is too short to give a single codec frame")
        return SpeechPrompt(
            [tok.bos_token_id, tok.audio_token_id] + audio_ids, "continuation", len(audio_ids)
        )

    def _forward(
        self,
        prompts: list[SpeechPrompt],
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        do_sample: bool = True,
        max_seconds: float = 10.0,
        min_frames: int = 1,
        seed: int | None = None,
        guidance_scale: float = 1.0,
        num_candidates: int = 1,
        phoneme_scorer=None,
        rerank_metric: str = "per",
        reading_rate: float | None = None,
        reading_slack: int = DEFAULT_READING_SLACK,
    ) -> dict[str, Any]:
        settings = (
            temperature,
            top_k,
            top_p,
            do_sample,
            max_seconds,
            min_frames,
            seed,
            guidance_scale,
            reading_rate,
            reading_slack,
        )
        if num_candidates == 1:
            return {"generated": self._generate(prompts, *settings), "prompts": prompts}
        for p in prompts:
            if p.kind == "tts" and p.text is None:
                raise ValueError(
                    "num_candidates > 1 scores candidates against the prompt's text: give the text "
                    "('text' input), not ready input_ids"
                )
        copies = [num_candidates if p.kind == "tts" else 1 for p in prompts]
        expanded = [p for p, n in zip(prompts, copies) for _ in range(n)]
        rows = self._generate(expanded, *settings)
        tok, eos = self.tokenizer, int(self.tokenizer.eos_token_id)
        generated, reranked, start = [], [], 0
        for p, n in zip(prompts, copies):
            group, start = rows[start : start + n], start + n
            if n == 1:
                generated.append(group[0])
                reranked.append(None)
                continue
            codes = [tok.ids_to_codes([i for i in new if i != eos]) for new in group]
            # phoneme_scorer is a PhonemeScorer here: __call__ loaded it (`best_of_n_settings`)
            scores = phoneme_scorer.score_codes(tok.codec, codes, p.text, metric=rerank_metric)
            best = int(torch.argmin(scores))  # the first of equal scores
            generated.append(group[best])
            reranked.append({"candidate_scores": [float(v) for v in scores], "chosen": best})
        return {"generated": generated, "prompts": prompts, "reranked": reranked}

    def _generate(
        self,
        prompts: list[SpeechPrompt],
        temperature: float,
        top_k: int,
        top_p: float,
        do_sample: bool,
        max_seconds: float,
        min_frames: int,
        seed: int | None,
        guidance_scale: float,
        reading_rate: float | None = None,
        reading_slack: int = DEFAULT_READING_SLACK,
    ) -> list[list[int]]:
        """Sample each prompt once: its new ids (audio ids, then `<eos>` when the LM ended the utterance; an
        interleaved LM's rows also hold the text pieces it read)."""
        if is_frame_lm(self.model):
            return self._forward_frames(
                prompts, temperature, top_k, top_p, do_sample, max_seconds, min_frames, seed, guidance_scale
            )
        extra_new = 0  # text pieces the interleaved layout reads inside the audio part
        if tts_layout(self.model) == "interleaved":
            if guidance_scale != 1.0:
                raise ValueError(
                    "guidance_scale needs the prefix TTS layout; this LM reads its text inside the audio part "
                    "(tts_layout='interleaved'), so there is no text-free branch to guide against: use 1.0"
                )
            tok = self.tokenizer
            special = {int(i) for i in tok.all_special_ids}
            processor = InterleavedTextLogitsProcessor(
                self.grammar,
                int(tok.text_token_id),
                max_seconds=max_seconds,
                min_frames=min_frames,
                text_ids=[i for i in range(int(tok.audio_offset)) if i not in special],
                pieces_per_frame=reading_rate if reading_rate is not None else lm_reading_rate(self.model),
                reading_slack=reading_slack,
            )
            extra_new = processor.max_text_tokens([p.input_ids for p in prompts])
        else:
            processor = FrameGrammarLogitsProcessor(
                self.grammar, max_seconds=max_seconds, min_frames=min_frames
            )
        processors = [processor]
        if guidance_scale != 1.0:  # guidance first: the grammar then masks the guided scores
            tok = self.tokenizer
            uncond = [
                unconditional_prompt(p.input_ids, int(tok.bos_token_id), int(tok.audio_token_id))
                for p in prompts
            ]
            processors.insert(
                0, TextGuidanceLogitsProcessor(self.model, uncond, int(tok.pad_token_id), guidance_scale)
            )
        G = self.grammar.tokens_per_frame
        # max_seconds bounds all audio after <audio>, the prompt's own frames included.
        prompt_frames = [p.prompt_audio_tokens // G for p in prompts]
        if max(prompt_frames) >= processor.max_frames:
            raise ValueError(
                f"a prompt already holds {max(prompt_frames)} frames; max_seconds={max_seconds} allows "
                f"{processor.max_frames}: raise max_seconds"
            )
        max_new = (processor.max_frames - min(prompt_frames)) * G + 1 + extra_new  # + the forced <eos>
        input_ids, attention_mask = left_pad([p.input_ids for p in prompts], int(self.tokenizer.pad_token_id))
        if seed is not None:
            torch.manual_seed(seed)
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p) if do_sample else {}
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            logits_processor=LogitsProcessorList(processors),
            do_sample=do_sample,
            max_new_tokens=max_new,
            eos_token_id=int(self.tokenizer.eos_token_id),
            pad_token_id=int(self.tokenizer.pad_token_id),
            use_cache=True,
            **sampling,
        )
        eos = int(self.tokenizer.eos_token_id)
        rows = [row[input_ids.shape[1] :] for row in sequences.cpu().tolist()]
        return [new[: new.index(eos) + 1] if eos in new else new for new in rows]

    def _forward_frames(
        self,
        prompts: list[SpeechPrompt],
        temperature: float,
        top_k: int,
        top_p: float,
        do_sample: bool,
        max_seconds: float,
        min_frames: int,
        seed: int | None,
        guidance_scale: float,
    ) -> list[list[int]]:
        """Generation with a frame-level LM (`FrameLevelSpeechLM.generate_frames`): the same prompts, limits and
        sampling; the new frames come back as audio ids followed by `<eos>`, as the flat LM's do."""
        tok, G = self.tokenizer, self.grammar.tokens_per_frame
        max_frames = self.grammar.max_frames(max_seconds)
        if max_frames is None:  # no time limit: the backbone's positions are the limit
            max_frames = int(self.model.config.backbone.get("max_position_embeddings", 4096))
        if min_frames < 0 or min_frames > max_frames:
            raise ValueError(
                f"min_frames must be in [0, {max_frames}] for max_seconds={max_seconds}, got {min_frames}"
            )
        token_prompts, frames, uncond = [], [], []
        for p in prompts:
            a = len(p.input_ids) - 1 - p.input_ids[::-1].index(int(tok.audio_token_id))
            audio = p.input_ids[a + 1 :]
            if len(audio) % G:
                raise ValueError(
                    f"the prompt's {len(audio)} audio ids after <audio> are not whole frames of {G}"
                )
            if len(audio) // G >= max_frames:
                raise ValueError(
                    f"a prompt already holds {len(audio) // G} frames; max_seconds={max_seconds} allows "
                    f"{max_frames}: raise max_seconds"
                )
            token_prompts.append(p.input_ids[: a + 1])
            frames.append(torch.tensor(audio, dtype=torch.long).reshape(-1, G) - int(tok.audio_offset))
            uncond.append(
                unconditional_prompt(p.input_ids[: a + 1], int(tok.bos_token_id), int(tok.audio_token_id))
            )
        if seed is not None:
            torch.manual_seed(seed)
        codes = self.model.generate_frames(
            token_prompts,
            max_frames=max_frames,
            min_frames=min_frames,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            do_sample=do_sample,
            prompt_frames=frames,
            guidance_scale=guidance_scale,
            unconditional_ids=uncond,
        )
        eos = int(tok.eos_token_id)
        return [list(tok.codes_to_ids(c)) + [eos] if len(c) else [eos] for c in codes]

    def postprocess(
        self, outputs: dict[str, Any], include_prompt_audio: bool = False
    ) -> list[dict[str, Any]]:
        tok, eos = self.tokenizer, int(self.tokenizer.eos_token_id)
        generated: list[list[int]] = []
        interleaved = tts_layout(self.model) == "interleaved" and not is_frame_lm(self.model)
        for new, prompt in zip(outputs["generated"], outputs["prompts"]):
            # the interleaved layout's text pieces inside the audio part are checked by its processor
            spoken = [i for i in new if tok.is_audio_id(i) or i == eos] if interleaved else new
            problems = check_frame_grammar(prompt.input_ids + spoken, self.grammar)
            if (
                problems
            ):  # cannot happen with the processor on; guards against a misconfigured model/tokenizer
                raise RuntimeError(f"generated sequence breaks the frame grammar: {problems[:3]}")
            generated.append(new)
        to_decode = []
        for prompt, new in zip(outputs["prompts"], generated):
            audio = [i for i in new if tok.is_audio_id(i)]
            if include_prompt_audio and prompt.prompt_audio_tokens:
                audio = prompt.input_ids[-prompt.prompt_audio_tokens :] + audio
            to_decode.append(audio)
        waves = tok.batch_decode_audio(to_decode) if any(to_decode) else []
        results = []
        reranked = outputs.get("reranked") or [None] * len(generated)
        for k, new in enumerate(generated):
            wave, sr = waves[k] if to_decode[k] else (np.zeros(0, dtype=np.float32), int(tok.sampling_rate))
            result = {"audio": np.asarray(wave, dtype=np.float32), "sampling_rate": int(sr), "ids": new}
            results.append({**result, **(reranked[k] or {})})
        return results

    # --- calling ---------------------------------------------------------------------------------------
    def __call__(self, inputs, batch_size: int | None = None, **kwargs):
        """Generate for one input (returns a dict) or a list (returns a list, in left-padded batches)."""
        pre, fwd, post = self._sanitize_parameters(**kwargs)
        pre, fwd, post = (
            {**self._preprocess_params, **pre},
            {**self._forward_params, **fwd},
            {**self._postprocess_params, **post},
        )
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        size = batch_size or self._batch_size or 8
        if fwd.get("num_candidates", 1) > 1:  # each TTS prompt becomes N rows of one generate call
            from .rerank import best_of_n_settings

            fwd.update(
                best_of_n_settings(
                    fwd["num_candidates"], fwd.get("phoneme_scorer"), fwd.get("rerank_metric", "per")
                )
            )
            size = max(1, size // fwd["num_candidates"])
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), size):
            prompts = [self.preprocess(x, **pre) for x in items[start : start + size]]
            with torch.inference_mode():
                outputs = self._forward(prompts, **fwd)
            results.extend(self.postprocess(outputs, **post))
        return results[0] if single else results


def check_rerank_metric(metric) -> str:
    """`rerank_metric` must name one of `jepatok.lm.rerank.SCORE_METRICS`."""
    from .rerank import SCORE_METRICS

    if metric not in SCORE_METRICS:
        raise ValueError(f"rerank_metric must be one of {SCORE_METRICS}, got {metric!r}")
    return metric


def check_reading_rate(rate) -> float:
    """An interleaved LM's reading schedule in text pieces per frame (> 0)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise ValueError(f"reading_rate must be a number of text pieces per frame > 0, got {rate!r}")
    return float(rate)


def check_reading_slack(slack) -> int:
    """How many pieces an interleaved LM may read ahead of or behind its schedule (an int >= 0)."""
    if isinstance(slack, bool) or not isinstance(slack, int) or slack < 0:
        raise ValueError(f"reading_slack must be an int >= 0, got {slack!r}")
    return slack


def check_num_candidates(n) -> int:
    """`num_candidates` must be a positive integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"num_candidates must be a positive integer, got {n!r}")
    return int(n)


def tts_prompt_ids(tokenizer, text: str) -> list[int]:
    """`<bos> <text> text-ids <audio>` through the tokenizer's template (`build_tts_prompt_ids` when present)."""
    build = getattr(tokenizer, "build_tts_prompt_ids", None)
    if build is not None:
        return list(build(text))
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    return [tokenizer.bos_token_id, tokenizer.text_token_id, *text_ids, tokenizer.audio_token_id]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists -> (input_ids [B, S], attention_mask [B, S]) for batched decoder-only generation."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


class _TextToAudioDispatch:
    """The `text-to-audio` / `text-to-speech` entry: our pipeline for jepatok LMs, the stock one otherwise."""

    _load_processor = None
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __new__(cls, model, *args, tokenizer=None, **kwargs):
        from transformers.pipelines.text_to_audio import TextToAudioPipeline

        processor = kwargs.get("processor")
        tok = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        if is_speech_tokenizer(tok) or getattr(getattr(model, "config", None), "jepatok", None):
            kwargs.pop("processor", None)
            return SpeechGenerationPipeline(model, *args, tokenizer=tok, **kwargs)
        return TextToAudioPipeline(model, *args, tokenizer=tokenizer, **kwargs)


def register_pipelines() -> None:
    """Register `speech-continuation` and route `text-to-speech`/`text-to-audio` for jepatok LMs. Idempotent."""
    from transformers import AutoModelForCausalLM
    from transformers.pipelines import PIPELINE_REGISTRY

    tasks = PIPELINE_REGISTRY.supported_tasks
    if CONTINUATION_TASK not in tasks:
        PIPELINE_REGISTRY.register_pipeline(
            CONTINUATION_TASK,
            pipeline_class=SpeechGenerationPipeline,
            pt_model=AutoModelForCausalLM,
            type="multimodal",
        )
    entry = tasks.get("text-to-audio")
    if entry is not None and entry.get("impl") is not _TextToAudioDispatch:
        pt = tuple(entry.get("pt", ()))
        tasks["text-to-audio"] = {
            **entry,
            "impl": _TextToAudioDispatch,
            "pt": pt if AutoModelForCausalLM in pt else (*pt, AutoModelForCausalLM),
        }
