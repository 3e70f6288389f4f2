"""Evaluation metrics (FID, SWD, MS-SSIM, mIoU): not implemented yet (see the open issue)."""
