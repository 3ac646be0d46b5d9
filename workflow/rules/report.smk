# From results to the report: partition pictures, tidy CSVs (pandas), reports/paper_tables.html.


rule partitions:
    """DART partition pictures of a few validation images, from a trained run."""
    input:
        config=lambda wc: TRAIN_CONFIGS[wc.exp],
        metrics=f"runs/{SCALE}/{{exp}}/seed{SEEDS[0]}/metrics.json",
    output:
        f"results/{SCALE}/partitions/{{exp}}.png",
    params:
        script=str(Path(workflow.basedir) / "scripts" / "partitions.py"),
        checkpoint=lambda wc, input: str(Path(input.metrics).parent / "checkpoint_last.pt"),
        images=(PARTITIONS or {}).get("images", 4),
        overrides=lambda wc: plan.shell_join(
            plan.train_overrides(config, wc.exp, SEEDS[0], init_checkpoint=None)
        ),
    log:
        f"results/logs/{SCALE}/partitions/{{exp}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/torch.yaml"
    shell:
        "python {params.script} --config {input.config} --checkpoint {params.checkpoint} "
        "--images {params.images} --out {output} {params.overrides} > {log} 2>&1"


rule aggregate:
    """Tidy CSVs of everything measured, and every published cell beside ours with its verdict."""
    input:
        published=PUBLISHED,
        complexity=complexity_outputs(),
        metrics=metrics_outputs(),
        evals=eval_outputs(),
        benches=sweep_outputs(),
    output:
        runs=f"results/{SCALE}/tidy/runs.csv",
        complexity=f"results/{SCALE}/tidy/complexity.csv",
        throughput=f"results/{SCALE}/tidy/throughput.csv",
        comparison=f"results/{SCALE}/tidy/comparison.csv",
        claims=f"results/{SCALE}/tidy/claims.csv",
    params:
        experiments=EXPERIMENTS,
        groups=COMPLEXITY_GROUPS,
        scale=SCALE,
        tolerance=config["tolerance"],
    log:
        f"results/logs/{SCALE}/aggregate.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/aggregate.py"


rule report:
    """reports/paper_tables.html: self-contained (inlined images, no script, no network)."""
    input:
        unpack(lambda wc: dict(rules.aggregate.output.items())),
        template=str(Path(workflow.basedir) / "templates" / "paper_tables.html.j2"),
        partitions=partition_outputs(),
        tokenizer_bench=tokenizer_bench_outputs(),
    output:
        "reports/paper_tables.html",
    params:
        config=config,
        repo=lambda wc: str(REPO),
    log:
        f"results/logs/{SCALE}/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
