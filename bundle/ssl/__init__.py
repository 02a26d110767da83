"""Self-supervised pre-training (MoCo v2, inpainting) and fine-grained COVID-19 appearance classification with opacity
segmentation (methods.md, section 5), the ``configs/ssl/`` family.

- ``moco``: momentum encoder, queue of negatives, InfoNCE, two augmented views;
- ``inpainting``: random box masks, a light decoder, a loss on the hidden pixels only;
- ``export``: the pre-trained backbone saved as its own state dict plus a JSON sidecar, loadable by every network;
- ``finetune``: batches, loss and Dice of joint classification + segmentation;
- ``critical``: what the fine-tuned model looks at (Grad-CAM statistics, lung-masking shortcut test, calibration).
"""
