# From results to the report: partition pictures, tidy CSVs (pandas), reports/paper_tables.html.


rule partitions:
    """DART partition pictures of a few validation images, from a trained run."""
    input:
        config=lambda wc: run_config_file(wc.exp, SEEDS[0]),
        settings=lambda wc: tracked("partitions", PARTITIONS),
        metrics=f"runs/{SCALE}/{{exp}}/seed{SEEDS[0]}/metrics.json",
    output:
        f"results/{SCALE}/partitions/{{exp}}.png",
    params:
        script=str(WORKFLOW_DIR / "scripts" / "partitions.py"),
        checkpoint=lambda wc, input: str(Path(input.metrics).parent / "checkpoint_last.pt"),
        images=(PARTITIONS or {}).get("images", 4),
    log:
        f"results/logs/{SCALE}/partitions/{{exp}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/partitions/{{exp}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/torch.yaml"
    shell:
        "python {params.script} --config {input.config} --checkpoint {params.checkpoint} "
        "--images {params.images} --out {output} > {log} 2>&1"


rule aggregate:
    """Tidy CSVs of everything measured, and every published cell beside ours with its verdict."""
    input:
        settings=lambda wc: tracked("aggregate", AGGREGATE_SETTINGS),
        published=PUBLISHED,
        complexity=complexity_outputs(),
        metrics=metrics_outputs(),
        evals=eval_outputs(),
        benches=sweep_outputs(),
        machine=sweep_machine_outputs(),
        weights=published_outputs(),
    output:
        runs=f"results/{SCALE}/tidy/runs.csv",
        complexity=f"results/{SCALE}/tidy/complexity.csv",
        throughput=f"results/{SCALE}/tidy/throughput.csv",
        comparison=f"results/{SCALE}/tidy/comparison.csv",
        claims=f"results/{SCALE}/tidy/claims.csv",
        published_weights=f"results/{SCALE}/tidy/published_weights.csv",
    params:
        **AGGREGATE_SETTINGS,
    log:
        f"results/logs/{SCALE}/aggregate.log",
    benchmark:
        f"results/{SCALE}/benchmarks/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/aggregate.py"


rule report:
    """reports/paper_tables.html (the default scale's; other scales: reports/paper_tables_<scale>.html):
    self-contained (inlined images, no script, no network)."""
    input:
        unpack(lambda wc: dict(rules.aggregate.output.items())),
        settings=lambda wc: tracked("report", config),
        template=str(WORKFLOW_DIR / "templates" / "paper_tables.html.j2"),
        base_template=str(WORKFLOW_DIR / "templates" / "base.html.j2"),
        partitions=partition_outputs(),
        # the resolution claim's toy verdicts, under the headline claims (none at a scale without it)
        claim_verdicts=lambda wc: claim_verdicts_outputs(),
        tokenizer_bench=tokenizer_bench_outputs(),
    output:
        REPORT,
    params:
        config=config,
        # read when there (not inputs: Snakemake writes them after each job, not as its output)
        benchmarks=benchmark_outputs(None),
        repo=lambda wc: str(REPO),
    log:
        f"results/logs/{SCALE}/report.log",
    benchmark:
        f"results/{SCALE}/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report.py"
