"""Codec evaluation: metrics (signal, intelligibility, speaker, quality, rate), Codec2/Opus baselines and
HTML reports (`jepatok eval-codec`), plus `evaluate` modules in `jepatok.eval.hf_metrics`.

Modules: metrics (PESQ, STOI, SI-SDR, mel distance, MCD), asr (faster-whisper, WER/CER), quality
(Resemblyzer, ViSQOL, DistillMOS, DNSMOS), baselines, tokens (slot usage/entropy), clips (data sources),
scoring, evaluate_codec (pipeline + CLI), report. Submodules are imported on use so that heavy optional
packages load only for the metrics that run.
"""
