"""Experiment configs: each module's get_config() returns an ml_collections ConfigDict; derived
configs import their parent (`from . import camvid_standard`). Run one with
`python train.py --config configs/NAME.py --workdir DIR [--config.key=value ...]`."""
