# Data: toy datasets are generated (no download); real datasets are checked, never fetched.


rule toy_data:
    """Generate a built-in toy dataset (numpy, seeded; byte-identical for the same seed)."""
    output:
        "data/toy/{ds}/meta.json",
    params:
        out=lambda wc, output: str(Path(output[0]).parent),
        kind=lambda wc: TOY_DATASETS[wc.ds]["toy"]["kind"],
        seed=lambda wc: TOY_DATASETS[wc.ds]["toy"].get("seed", 0),
        set=lambda wc: plan.toy_set_args(TOY_DATASETS[wc.ds]),
    log:
        "results/logs/data/toy_{ds}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m dart.data.toy --kind {params.kind} --seed {params.seed} --out {params.out} {params.set} > {log} 2>&1"


rule check_data:
    """Check that a real dataset is where the config says, with the layout its loader reads."""
    output:
        f"results/{SCALE}/data/{{ds}}.ok",
    params:
        root=lambda wc: REAL_DATASETS[wc.ds]["root"],
        kind=lambda wc: wc.ds,
        key=lambda wc: f"scales.{SCALE}.datasets.{wc.ds}.root",
    log:
        f"results/logs/{SCALE}/data/check_{{ds}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/check_data.py"
