"""Shared test setup: tests never touch the network (the Hugging Face hub would hang offline)."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
