"""Evaluation: SWD, MS-SSIM, FID/KID statistics, mIoU, label-map metrics and the evaluators.

The metric modules (`swd`, `ms_ssim`, `statistics`, `segmentation`, `semantic`) are pure functions;
`evaluator` (label maps, SemGAN) and `photo_evaluator` (photos, SemanticGAN) stream a model's
outputs through them as `config.evals` asks.
"""
