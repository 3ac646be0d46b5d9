# Data: toy datasets are generated (no download); the smoke scale's fake datasets are generated in
# the real ones' on-disk layouts; real datasets (and the fake ones) are checked, never fetched.


rule toy_data:
    """Generate a built-in toy dataset (numpy, seeded; byte-identical for the same seed)."""
    input:
        settings=data_settings,
    output:
        "data/toy/{ds}/meta.json",
    params:
        out=lambda wc, output: str(Path(output[0]).parent),
        kind=lambda wc: TOY_DATASETS[wc.ds]["toy"]["kind"],
        seed=lambda wc: TOY_DATASETS[wc.ds]["toy"].get("seed", 0),
        set=lambda wc: plan.toy_set_args(TOY_DATASETS[wc.ds]),
    log:
        "results/logs/data/toy_{ds}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/toy_data/{{ds}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m dart.data.toy --kind {params.kind} --seed {params.seed} --out {params.out} {params.set} > {log} 2>&1"


rule fake_data:
    """A few fake images / annotations / clips in a paper dataset's own layout (smoke scale)."""
    input:
        settings=data_settings,
    output:
        f"data/fake/{SCALE}/{{ds}}/fake.json",
    params:
        out=lambda wc, output: str(Path(output[0]).parent),
        layout=lambda wc: FAKE_DATASETS[wc.ds]["fake"]["layout"],
        seed=lambda wc: FAKE_DATASETS[wc.ds]["fake"].get("seed", 0),
    log:
        f"results/logs/{SCALE}/data/fake_{{ds}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/fake_data/{{ds}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m dart.data.fake --layout {params.layout} --seed {params.seed} --out {params.out} > {log} 2>&1"


rule check_data:
    """Check that a real dataset is where the config says, with the layout its loader reads."""
    input:
        settings=data_settings,
        fake=lambda wc: [f"data/fake/{SCALE}/{wc.ds}/fake.json"] if wc.ds in FAKE_DATASETS else [],
    output:
        f"results/{SCALE}/data/{{ds}}.ok",
    params:
        root=lambda wc: plan.data_root(config, wc.ds),
        kind=lambda wc: wc.ds,
        key=lambda wc: f"scales.{SCALE}.datasets.{wc.ds}.root",
    log:
        f"results/logs/{SCALE}/data/check_{{ds}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/check_data/{{ds}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/check_data.py"
