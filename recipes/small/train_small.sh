#!/bin/bash
# Train the shipped `small` codec + speech LM end to end on CPU and copy the result into
# jepatok/pretrained/small (see recipes/small/README.md for the run that produced the shipped files).
# Every stage is skipped when its output exists, so the script can be re-run after an interruption
# (a half-finished training stage: re-run its command with --resume). Steps are environment variables.
#
#   bash recipes/small/train_small.sh            # RUN=runs/small CORPUS=corpus/small2 ...
set -euo pipefail
cd "$(dirname "$0")/../.."
J=${J:-.venv/bin/jepatok}
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/small}
CORPUS=${CORPUS:-corpus/var16}           # stages envx/2x (and the LM's corpus when ENVY_STEPS=0)
HOURS=${HOURS:-3}
VARIANTS=${VARIANTS:-16}                 # derived speakers per voice in CORPUS (the codec corpus keeps 4)
CODEC_CORPUS=${CODEC_CORPUS:-corpus/small2}  # codec (stage 1 / stage 2 / warm-up) corpus
CODEC_HOURS=${CODEC_HOURS:-2}
# The twelve voices of the older corpora (CODEC_CORPUS, CORPUS): pinned, so that installing more voices does not
# change them. CORPUS_ALL (stages envy/2y and the LM) uses every voice installed, with the same two held out.
BASE_VOICES=${BASE_VOICES:-"piper-joe flite-slt flite-rms flite-awb flite-kal16 festival-slt-hts festival-kal festival-ked pico-en-us pico-en-gb espeak-en-us espeak-en-gb"}
HELD_OUT=${HELD_OUT:-"espeak-en-us flite-awb"}
CORPUS_ALL=${CORPUS_ALL:-corpus/v17}
HOURS_ALL=${HOURS_ALL:-4}
S1_STEPS=${S1_STEPS:-500}
S2_STEPS=${S2_STEPS:-3000}
S2_DISC=${S2_DISC:-2000}                 # discriminators from this step (= S2_STEPS: none)
# Stages 1 and 2 train the codec as it was before the pre-quantization projection, the decoder's frame blocks
# and its envelope path existed (the shipped lineage); stage 2b adds them.
# The modules the later stages add, off: the encoder's MLP spectral input and the RMS normalisation of FSQ's input.
LATER="codec.encoder_config.spectral_input_bands=0 codec.encoder_config.spectral_input_hidden=0 codec.fsq_config.input_rms=0.0"
BASE_CODEC=${BASE_CODEC:-"codec.fsq_config.pre_projection=false codec.decoder_config.frame_layers=0 codec.decoder_config.envelope_bands=0 $LATER"}
S2_EXTRA=${S2_EXTRA:-"lr=1.0e-3 mel_weight=1.0 warmup_steps=50"}
# Stage 2b continues stage 2 with the pre-quantization projection (whitened from data at its start), the
# decoder's frame blocks and its envelope path (head set by ridge regression at its start) added, and the
# encoder fine-tuned at a low lr (S2B_STEPS=0 skips it: the tokenizer
# is then built from s2/final). The shipped run did this in two parts; see the model card.
S2B_STEPS=${S2B_STEPS:-5700}
S2B_DISC=${S2B_DISC:-5000}
S2B_EXTRA=${S2B_EXTRA:-"lr=1.0e-3 mel_weight=1.0 warmup_steps=50 encoder_lr=2.0e-4 envelope_weight=2.0 $LATER"}
# Stage 2t: the decoder learns to render envelopes (teacher forcing: its waveform stack gets the input's true log-mel
# envelope instead of the predicted one; encoder frozen; TF_STEPS=0 skips it). Before it, the decoder barely used its
# envelope input (STOI 0.611 with the predicted envelope, 0.616 with the true one, 0.600 with none).
TF_STEPS=${TF_STEPS:-400}
TF_EXTRA=${TF_EXTRA:-"lr=1.0e-3 mel_weight=1.0 warmup_steps=20 envelope_weight=2.0 envelope_teacher_forcing=1.0 calibrate_quantizer_batches=0 calibrate_envelope_batches=0 $LATER"}
# Envelope warm-up (jepatok train-envelope): adds the encoder's MLP spectral input and the per-frame RMS normalisation of
# FSQ's input, re-whitens the projection, and trains the frame-rate path as a log-mel autoencoder through FSQ on cached
# front-end features (ENV_STEPS=0 skips it and stage 2c).
ENV_STEPS=${ENV_STEPS:-4000}
ENV_LR=${ENV_LR:-1.5e-3}
ENV_HIDDEN=${ENV_HIDDEN:-512}
# Stage 2c: the decoder learns to render the warmed-up codes, half of the clips teacher-forced (encoder frozen; projection
# and head kept as trained).
S2C_STEPS=${S2C_STEPS:-3000}
S2C_DISC=${S2C_DISC:-2400}
S2C_EXTRA=${S2C_EXTRA:-"lr=1.0e-3 mel_weight=1.0 warmup_steps=50 envelope_weight=2.0 envelope_teacher_forcing=0.5 calibrate_quantizer_batches=0 calibrate_envelope_batches=0"}
S2_LAUNCH=${S2_LAUNCH:-".venv/bin/accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m jepatok.cli"}
LM_STEPS=${LM_STEPS:-2000}              # the seventh checkpoint: 1000 on corpus/var16
TEXT_VOCAB=${TEXT_VOCAB:-1000}
TEXT_FRONTEND=${TEXT_FRONTEND:-spelling}  # or espeak-ipa: the tokenizer's text pieces are IPA phonemes (new ids)
# Digit-factorized audio embeddings (audio_digit_radix=4; README, speech LM training) on one 2-thread process.
LM_EXTRA=${LM_EXTRA:-"per_device_batch_size=4 gradient_accumulation_steps=1 warmup_steps=50 eval_steps=250 save_steps=250 max_eval_blocks=32 audio_digit_radix=4"}
LM_LAUNCH=${LM_LAUNCH:-"env OMP_NUM_THREADS=2 $J"}  # or ".venv/bin/accelerate launch --config_file recipes/accelerate/lm_ddp_cpu2.yaml -m jepatok.cli"
mkdir -p "$RUN"
ts() { date -u +%H:%M:%S; }
log() { echo "$1 $(ts)" | tee -a "$RUN/times.txt"; }

[ -f "$CODEC_CORPUS/summary.json" ] || { log "codec corpus start"; $J build-corpus --out "$CODEC_CORPUS" --hours "$CODEC_HOURS" \
    --seed 0 --voices $BASE_VOICES > "$RUN/codec_corpus.log" 2>&1; log "codec corpus done"; }
[ -f "$CORPUS/summary.json" ] || { log "corpus start"; $J build-corpus --out "$CORPUS" --hours "$HOURS" --seed 0 \
    --variants-per-voice "$VARIANTS" --voices $BASE_VOICES > "$RUN/corpus.log" 2>&1; log "corpus done"; }
[ -f "$RUN/s1/final/config.json" ] || { log "s1 start"; $J train-stage1 --recipe small --data "$CODEC_CORPUS" --output-dir "$RUN/s1" \
    --max-steps "$S1_STEPS" warmup_steps=30 log_every=10 save_every=100 $BASE_CODEC > "$RUN/s1.log" 2>&1; log "s1 done"; }
[ -f "$RUN/s2/final/config.json" ] || { log "s2 start"; $S2_LAUNCH train-stage2 --recipe small --stage1 "$RUN/s1/final" \
    --data "$CODEC_CORPUS" --output-dir "$RUN/s2" --max-steps "$S2_STEPS" disc_start_step="$S2_DISC" log_every=10 \
    save_every=100 sample_every=250 $S2_EXTRA $BASE_CODEC > "$RUN/s2.log" 2>&1; log "s2 done"; }
CODEC_FINAL="$RUN/s2/final"
if [ "$S2B_STEPS" -gt 0 ]; then
  CODEC_FINAL="$RUN/s2b/final"
  [ -f "$CODEC_FINAL/config.json" ] || { log "s2b start"; $S2_LAUNCH train-stage2 --recipe small --stage1 "$RUN/s2/final" \
      --finetune-encoder --data "$CODEC_CORPUS" --output-dir "$RUN/s2b" --max-steps "$S2B_STEPS" \
      disc_start_step="$S2B_DISC" log_every=10 save_every=100 sample_every=250 $S2B_EXTRA > "$RUN/s2b.log" 2>&1; log "s2b done"; }
fi
if [ "$TF_STEPS" -gt 0 ]; then
  [ -f "$RUN/s2t/final/config.json" ] || { log "s2t start"; $S2_LAUNCH train-stage2 --recipe small --stage1 "$CODEC_FINAL" \
      --data "$CODEC_CORPUS" --output-dir "$RUN/s2t" --max-steps "$TF_STEPS" disc_start_step=100000 log_every=10 \
      save_every=100 sample_every=0 $TF_EXTRA > "$RUN/s2t.log" 2>&1; log "s2t done"; }
  CODEC_FINAL="$RUN/s2t/final"
fi
if [ "$ENV_STEPS" -gt 0 ]; then
  [ -f "$RUN/env/final/config.json" ] || { log "env start"; $J train-envelope --codec "$CODEC_FINAL" --preset small \
      --spectral-input-hidden "$ENV_HIDDEN" --spectral-input-bands 32 --fsq-input-rms 0.8 --whiten --data "$CODEC_CORPUS" --output-dir "$RUN/env" \
      --steps "$ENV_STEPS" --lr "$ENV_LR" --threads 2 > "$RUN/env.log" 2>&1; log "env done"; }
  [ -f "$RUN/s2c/final/config.json" ] || { log "s2c start"; $S2_LAUNCH train-stage2 --recipe small --stage1 "$RUN/env/final" \
      --data "$CODEC_CORPUS" --output-dir "$RUN/s2c" --max-steps "$S2C_STEPS" disc_start_step="$S2C_DISC" log_every=10 \
      save_every=100 sample_every=500 $S2C_EXTRA codec.encoder_config.spectral_input_hidden=$ENV_HIDDEN > "$RUN/s2c.log" 2>&1; log "s2c done"; }
  CODEC_FINAL="$RUN/s2c/final"
fi
# Decoder-only stage NAME (freeze_codes: encoder and projection as loaded, so the codes do not change; no
# discriminators) on the codec so far; STEPS=0 skips it. Sets CODEC_FINAL to its result.
decoder_only_stage() {  # NAME STEPS SAVE_EVERY EXTRA [DATA [LAUNCH]]
  local name=$1 steps=$2 save=$3 extra=$4 data=${5:-$CODEC_CORPUS} launch=${6:-$S2_LAUNCH}
  [ "$steps" -gt 0 ] || return 0
  [ -f "$RUN/$name/final/config.json" ] || { log "$name start"; $launch train-stage2 --recipe small \
      --stage1 "$CODEC_FINAL" --data "$data" --output-dir "$RUN/$name" --max-steps "$steps" \
      disc_start_step=100000 log_every=10 save_every="$save" sample_every=0 $extra > "$RUN/$name.log" 2>&1
      log "$name done"; }
  CODEC_FINAL="$RUN/$name/final"
}
# Stage 2e: the decoder trains on, no teacher forcing (S2E_STEPS=0 skips it).
S2E_STEPS=${S2E_STEPS:-2800}
S2E_EXTRA=${S2E_EXTRA:-"lr=3.0e-4 mel_weight=1.0 warmup_steps=50 envelope_weight=2.0 envelope_teacher_forcing=0.0 freeze_codes=true calibrate_envelope_batches=0"}
decoder_only_stage s2e "$S2E_STEPS" 200 "$S2E_EXTRA"
# Stage 2i: the decoder's waveform stack is replaced by an iSTFT head (decoder_config.head=istft: the first two
# up-sampling blocks stay, a ConvNeXt head at 100 STFT frames/s predicts log-magnitude and phase); no waveform
# L1 (the phase is free; the STFT and mel losses constrain it) (S2I_STEPS=0 skips it).
S2I_STEPS=${S2I_STEPS:-5000}
S2I_EXTRA=${S2I_EXTRA:-"lr=1.0e-3 mel_weight=1.0 warmup_steps=50 envelope_weight=2.0 freeze_codes=true calibrate_envelope_batches=0 l1_weight=0.0 codec.decoder_config.head=istft"}
decoder_only_stage s2i "$S2I_STEPS" 500 "$S2I_EXTRA"
# Stage envx: the envelope warm-up continued on CORPUS (16 derived speakers per voice), so the codes carry more of the
# envelope on unseen voices (the codes change; ENVX_STEPS=0 skips it and 2x). Stage 2x: the decoder-only stage on the new
# codes, on CORPUS, one process (the shipped run shared the machine with the LM's training).
ENVX_STEPS=${ENVX_STEPS:-6000}
S2X_STEPS=${S2X_STEPS:-2700}
S2X_EXTRA=${S2X_EXTRA:-"lr=5.0e-4 mel_weight=1.0 warmup_steps=50 envelope_weight=2.0 freeze_codes=true calibrate_envelope_batches=0 l1_weight=0.0 codec.decoder_config.head=istft"}
S2X_LAUNCH=${S2X_LAUNCH:-"env OMP_NUM_THREADS=1 $J"}
if [ "$ENVX_STEPS" -gt 0 ]; then
  [ -f "$RUN/envx/final/config.json" ] || { log "envx start"; $J train-envelope --codec "$CODEC_FINAL" --data "$CORPUS" \
      --output-dir "$RUN/envx" --steps "$ENVX_STEPS" --lr 1.0e-3 --threads 2 > "$RUN/envx.log" 2>&1; log "envx done"; }
  CODEC_FINAL="$RUN/envx/final"
  decoder_only_stage s2x "$S2X_STEPS" 300 "$S2X_EXTRA" "$CORPUS" "$S2X_LAUNCH"
fi
# Stage envy: the envelope warm-up continued on CORPUS_ALL (every installed voice, 17 with the contrib/non-free
# festival voices, 16 derived speakers each; the codes change), then stage 2y, the decoder-only stage on the new codes
# on CORPUS_ALL (one 1-thread process beside the LM). The eighth checkpoint. ENVY_STEPS=0 skips both, and the LM
# then trains on CORPUS.
ENVY_STEPS=${ENVY_STEPS:-8000}
S2Y_STEPS=${S2Y_STEPS:-2700}
LM_CORPUS=$CORPUS
if [ "$ENVY_STEPS" -gt 0 ]; then
  [ -f "$CORPUS_ALL/summary.json" ] || { log "corpus_all start"; $J build-corpus --out "$CORPUS_ALL" --hours "$HOURS_ALL" \
      --seed 0 --variants-per-voice "$VARIANTS" --held-out-voices $HELD_OUT > "$RUN/corpus_all.log" 2>&1; log "corpus_all done"; }
  [ -f "$RUN/envy/final/config.json" ] || { log "envy start"; $J train-envelope --codec "$CODEC_FINAL" --data "$CORPUS_ALL" \
      --output-dir "$RUN/envy" --steps "$ENVY_STEPS" --lr 1.0e-3 --threads 2 > "$RUN/envy.log" 2>&1; log "envy done"; }
  CODEC_FINAL="$RUN/envy/final"
  LM_CORPUS=$CORPUS_ALL
  S2Y_EXTRA=${S2Y_EXTRA:-"$S2X_EXTRA"}
  (decoder_only_stage s2y "$S2Y_STEPS" 300 "$S2Y_EXTRA" "$CORPUS_ALL" "$S2X_LAUNCH") &  # beside the LM's stages
  S2Y_PID=$!
fi
# The tokenizer of codec CODEC with a text vocabulary trained on the train transcripts of CORPUS.
make_tokenizer() {  # CODEC CORPUS OUT
  $PY - "$1" "$2/train/metadata.csv" "$3" "$TEXT_VOCAB" "$TEXT_FRONTEND" <<'PYEOF'
import csv, sys
from jepatok import JepaSpeechTokenizer
codec_dir, meta, out, vocab, frontend = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
with open(meta, newline="") as f:
    texts = [row["text"] for row in csv.DictReader(f) if row["text"]]
tok = JepaSpeechTokenizer.from_codec(codec_dir, texts=texts, text_vocab_size=vocab, text_frontend=frontend)
tok.save_pretrained(out)
print(f"tokenizer: {len(texts)} transcripts, vocabulary {len(tok)}, audio offset {tok.audio_offset}")
PYEOF
}
if [ ! -f "$RUN/tokenizer/tokenizer_config.json" ]; then
  log "tokenizer start"
  make_tokenizer "$CODEC_FINAL" "$LM_CORPUS" "$RUN/tokenizer"
  # The voices the checkpoint trains on and holds out (training_voices.json; make demo reads it when shipped).
  $PY -c 'import sys; from jepatok.pretrained import corpus_training_voices as c, write_training_voices as w; w(c(sys.argv[1]), sys.argv[2])' \
      "$LM_CORPUS" "$RUN"
  log "tokenizer done"
fi
[ -f "$RUN/pretok/dataset_dict.json" ] || { log "pretokenize start"; $J pretokenize --codec "$RUN/tokenizer" --data "$LM_CORPUS" \
    --out "$RUN/pretok" --num-proc 1 > "$RUN/pretok.log" 2>&1; log "pretokenize done"; }
[ -f "$RUN/lm/final/config.json" ] || { log "lm start"; $LM_LAUNCH train-lm --recipe small --data "$RUN/pretok" --tokenizer "$RUN/tokenizer" \
    --output-dir "$RUN/lm" --max-steps "$LM_STEPS" $LM_EXTRA > "$RUN/lm.log" 2>&1; log "lm done"; }
# Stage 2y: its failure stops the script here with 2y's exit status (a bare `wait` would return 0).
[ -z "${S2Y_PID:-}" ] || wait "$S2Y_PID"
if [ "$ENVY_STEPS" -gt 0 ] && [ "$S2Y_STEPS" -gt 0 ] && [ ! -f "$RUN/tokenizer_2y/tokenizer_config.json" ]; then
  # The tokenizer (and so the LM's ids) with 2y's decoder: same codes_hash, checked by with_codec.
  $PY -c 'import sys; from jepatok import JepaSpeechTokenizer as T; T.from_pretrained(sys.argv[1]).with_codec(sys.argv[2]).save_pretrained(sys.argv[3])' \
      "$RUN/tokenizer" "$RUN/s2y/final" "$RUN/tokenizer_2y"
  log "tokenizer_2y done"
fi
# The pitch round (experimental, not in a shipped checkpoint; PITCH_ENV_STEPS=4000 runs it): stage envp continues the
# warm-up from 2y's codec with the decoder's pitch path and the encoder's pitch input added (train-envelope
# --pitch-subframes 20 --pitch-input; the codes change and learn the F0 contour), then stage 2q trains the decoder
# on them, decoder-only, half of the clips with the input's own F0 as the source. The shipped ninth checkpoint then
# built its tokenizer and warm-started its LM by hand (recipes/small/README.md, step 12).
PITCH_ENV_STEPS=${PITCH_ENV_STEPS:-0}
S2Q_STEPS=${S2Q_STEPS:-3000}
S2Q_EXTRA=${S2Q_EXTRA:-"$S2X_EXTRA codec.decoder_config.pitch_subframes=20 codec.encoder_config.pitch_input_subframes=20 pitch_teacher_forcing=0.5 pitch_weight=1.0"}
if [ "$PITCH_ENV_STEPS" -gt 0 ] && [ "$ENVY_STEPS" -gt 0 ] && [ "$S2Y_STEPS" -gt 0 ]; then
  [ -f "$RUN/envp/final/config.json" ] || { log "envp start"; $J train-envelope --codec "$RUN/s2y/final" --data "$CORPUS_ALL" \
      --output-dir "$RUN/envp" --steps "$PITCH_ENV_STEPS" --lr 1.0e-3 --threads 1 --pitch-subframes 20 --pitch-input \
      > "$RUN/envp.log" 2>&1; log "envp done"; }
  CODEC_FINAL="$RUN/envp/final"
  decoder_only_stage s2q "$S2Q_STEPS" 300 "$S2Q_EXTRA" "$CORPUS_ALL" "env OMP_NUM_THREADS=1 $J"
  # The LM for the new codes: a tokenizer from 2q's codec (the same transcripts, so the same text pieces and ids),
  # CORPUS_LM (the seed-0 plan at HOURS_LM hours: it contains CORPUS_ALL, and its validation/test sentences were
  # never trained on), and a warm start from the LM above (init_from_other_codec: same id layout, other codes).
  # The shipped checkpoints ran this warm start in two parts: 600 steps on CORPUS_ALL (ninth), then 2000 on the
  # 8 h corpus from the ninth LM (tenth; model card).
  CORPUS_LM=${CORPUS_LM:-corpus/v17h8}
  HOURS_LM=${HOURS_LM:-8}
  LMQ_STEPS=${LMQ_STEPS:-2600}
  [ -f "$CORPUS_LM/summary.json" ] || { log "corpus_lm start"; $J build-corpus --out "$CORPUS_LM" --hours "$HOURS_LM" \
      --seed 0 --variants-per-voice "$VARIANTS" --held-out-voices $HELD_OUT > "$RUN/corpus_lm.log" 2>&1; log "corpus_lm done"; }
  if [ ! -f "$RUN/tokenizer_q/tokenizer_config.json" ]; then
    make_tokenizer "$CODEC_FINAL" "$LM_CORPUS" "$RUN/tokenizer_q"
    log "tokenizer_q done"
  fi
  [ -f "$RUN/pretok_q/dataset_dict.json" ] || { log "pretokenize_q start"; $J pretokenize --codec "$RUN/tokenizer_q" \
      --data "$CORPUS_LM" --out "$RUN/pretok_q" --num-proc 2 > "$RUN/pretok_q.log" 2>&1; log "pretokenize_q done"; }
  [ -f "$RUN/lmq/final/config.json" ] || { log "lmq start"; $LM_LAUNCH train-lm --recipe small --data "$RUN/pretok_q" \
      --tokenizer "$RUN/tokenizer_q" --output-dir "$RUN/lmq" --max-steps "$LMQ_STEPS" $LM_EXTRA \
      init_from="$RUN/lm/final" init_from_other_codec=true > "$RUN/lmq.log" 2>&1; log "lmq done"; }
  # The phoneme LM (LMP_STEPS > 0): text pieces of espeak-ng IPA phonemes (TEXT_FRONTEND=espeak-ipa) learned from the
  # train transcripts of CORPUS_LMP (the seed-0 plan at HOURS_LMP hours: it contains CORPUS_LM, with twice its
  # distinct sentences), that corpus pre-tokenized with the same codec, and a warm start from lmq (same codes and id
  # layout: its text embeddings then stand for other pieces and are relearned).
  LMP_STEPS=${LMP_STEPS:-0}
  if [ "$LMP_STEPS" -gt 0 ]; then
    CORPUS_LMP=${CORPUS_LMP:-corpus/v17h16}
    HOURS_LMP=${HOURS_LMP:-16}
    [ -f "$CORPUS_LMP/summary.json" ] || { log "corpus_lmp start"; $J build-corpus --out "$CORPUS_LMP" --hours "$HOURS_LMP" \
        --seed 0 --variants-per-voice "$VARIANTS" --held-out-voices $HELD_OUT > "$RUN/corpus_lmp.log" 2>&1; log "corpus_lmp done"; }
    if [ ! -f "$RUN/tokenizer_p/tokenizer_config.json" ]; then
      TEXT_FRONTEND=espeak-ipa make_tokenizer "$CODEC_FINAL" "$CORPUS_LMP" "$RUN/tokenizer_p"
      log "tokenizer_p done"
    fi
    [ -f "$RUN/pretok_p/dataset_dict.json" ] || { log "pretokenize_p start"; $J pretokenize --codec "$RUN/tokenizer_q" \
        --data "$CORPUS_LMP" --out "$RUN/pretok_p" --num-proc 2 > "$RUN/pretok_p.log" 2>&1; log "pretokenize_p done"; }
    [ -f "$RUN/lmp/final/config.json" ] || { log "lmp start"; $LM_LAUNCH train-lm --recipe small --data "$RUN/pretok_p" \
        --tokenizer "$RUN/tokenizer_p" --output-dir "$RUN/lmp" --max-steps "$LMP_STEPS" $LM_EXTRA \
        init_from="$RUN/lmq/final" > "$RUN/lmp.log" 2>&1; log "lmp done"; }
    # The interleaved LM (LMI_STEPS > 0): a phoneme scorer trained on the codes (the shipped one: `probe-phonemes
    # --hidden 192 --steps 6000 --save-scorer`, 13 min), `align-text` puts each text piece of pretok_p on the codec
    # frame it starts in (CTC forced alignment through the scorer, 4.7 min), and the LM continues from lmp on the
    # interleaved TTS layout (tts_layout=interleaved: every piece again inside the audio part, before its frame).
    LMI_STEPS=${LMI_STEPS:-0}
    if [ "$LMI_STEPS" -gt 0 ]; then
      [ -f "$RUN/scorer/config.json" ] || { log "scorer start"; $J probe-phonemes --codec "$RUN/tokenizer_p" \
          --data "$RUN/pretok_p" --no-control --hidden 192 --steps 6000 --save-scorer "$RUN/scorer" \
          > "$RUN/scorer.log" 2>&1; log "scorer done"; }
      [ -f "$RUN/pretok_pa/dataset_dict.json" ] || { log "align start"; $J align-text --codec "$RUN/tokenizer_p" \
          --data "$RUN/pretok_p" --out "$RUN/pretok_pa" --phoneme-scorer "$RUN/scorer" > "$RUN/align.log" 2>&1; \
          log "align done"; }
      [ -f "$RUN/lmi/final/config.json" ] || { log "lmi start"; $LM_LAUNCH train-lm --recipe small \
          --data "$RUN/pretok_pa" --tokenizer "$RUN/tokenizer_p" --output-dir "$RUN/lmi" --max-steps "$LMI_STEPS" \
          $LM_EXTRA init_from="$RUN/lmp/final" tts_layout=interleaved > "$RUN/lmi.log" 2>&1; log "lmi done"; }
    fi
    # The frame-level LM (LMF_STEPS > 0; recipes/lm/$LMF_RECIPE.yaml, by default the FSQ-digit frame LM):
    # trained from scratch on the same phoneme tokenizer and pre-tokenized corpus (one backbone step per codec
    # frame; README "Frame-level mode").
    LMF_STEPS=${LMF_STEPS:-0}
    LMF_RECIPE=${LMF_RECIPE:-small_frame_digits}
    if [ "$LMF_STEPS" -gt 0 ]; then
      [ -f "$RUN/lmf/final/config.json" ] || { log "lmf start"; $LM_LAUNCH train-lm --recipe "$LMF_RECIPE" \
          --data "$RUN/pretok_p" --tokenizer "$RUN/tokenizer_p" --output-dir "$RUN/lmf" --max-steps "$LMF_STEPS" \
          ${LMF_EXTRA:-} > "$RUN/lmf.log" 2>&1; log "lmf done"; }
    fi
  fi
fi
log "all done"
