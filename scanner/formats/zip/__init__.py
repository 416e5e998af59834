"""Zip containers and PyTorch: zip structure, torch zip checkpoints, TorchScript, legacy torch files."""
