"""Command-line entry points: argparse in, one library call out. The top-level train.py,
evaluate.py and synthesize.py are shims for the first three.

    train.py        jaxseg.train.train
    evaluate.py     jaxseg.evaluation.evaluate_checkpoints
    synthesize.py   jaxseg.synthesis.synthesize
    python -m jaxseg.cli.port    import / export PyTorch weights (jaxseg.models.port)
    python -m jaxseg.cli.coco    build the COCO -> VOC21 label cache
    python -m jaxseg.cli.demo    `make demo`
"""
