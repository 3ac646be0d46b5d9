# The scorer trunk as the paper trains it (scales.<scale>.scorer_pretrain): pretrained once on its
# own generated set (the toy stand-in for ImageNet), then loaded frozen by every DART run whose
# model.kwargs.scorer_weights names the file; those runs train only the score head.

SCORER_PRETRAIN = SETTINGS.get("scorer_pretrain") or None


if SCORER_PRETRAIN:  # without it a scale makes no such trunk (a run that names one: a missing input)

    rule scorer_pretrain:
        """Train the toy scorer's trunk on its own toy set (`python -m dart.pretrain_scorer`)."""
        input:
            data=lambda wc: f"data/toy/{SCORER_PRETRAIN['dataset']}/meta.json",
        output:
            trunk=f"results/{SCALE}/scorer_trunk/{{scorer}}.pt",
            meta=f"results/{SCALE}/scorer_trunk/{{scorer}}.pt.json",
        params:
            data=lambda wc, input: str(Path(input.data).parent),
            epochs=lambda wc: SCORER_PRETRAIN.get("epochs", 6),
            seed=lambda wc: SCORER_PRETRAIN.get("seed", 0),
        wildcard_constraints:
            scorer="cnn",
        log:
            f"results/logs/{SCALE}/scorer_pretrain/{{scorer}}.log",
        benchmark:
            f"results/{SCALE}/benchmarks/scorer_pretrain/{{scorer}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        conda:
            "../envs/torch.yaml"
        shell:
            "python -m dart.pretrain_scorer --data {params.data} --out {output.trunk} --epochs {params.epochs} "
            "--seed {params.seed} --threads {threads} > {log} 2>&1"
