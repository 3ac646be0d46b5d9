# The resolution claim at toy scale (scales.<scale>.claim): every role's experiment trained with each
# claim seed (the generic `train` rule), measured on the validation split (top-1, GMACs, partition
# measures), ToMe applied to the trained grid_4n model at DART-N's GMACs, then reports/claim.html
# with the verdicts. Absent `claim` section: nothing here is built.

include: "claim_plan.smk"


rule claim_measure:
    """Validation top-1, GMACs and partition measures of one trained run."""
    input:
        metrics=f"runs/{SCALE}/{{exp}}/seed{{seed}}/metrics.json",
    output:
        f"results/{SCALE}/claim/measure/{{exp}}/seed{{seed}}.json",
    params:
        script=str(WORKFLOW_DIR / "scripts" / "claim_measure.py"),
        run=lambda wc, input: str(Path(input.metrics).parent),
    log:
        f"results/logs/{SCALE}/claim/measure_{{exp}}_seed{{seed}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/claim_measure/{{exp}}_seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/torch.yaml"
    shell:
        "python {params.script} --run {params.run} --threads {threads} --out {output} > {log} 2>&1"


rule claim_tome:
    """ToMe on the trained full-resolution grid (no retraining), r matched to DART-N's GMACs."""
    input:
        grid=lambda wc: f"runs/{SCALE}/{CLAIM_ROLES['grid_4n']}/seed{wc.seed}/metrics.json",
        dart=lambda wc: f"results/{SCALE}/claim/measure/{CLAIM_ROLES['dart_n']}/seed{wc.seed}.json",
    output:
        f"results/{SCALE}/claim/tome/seed{{seed}}.json",
    params:
        script=str(WORKFLOW_DIR / "scripts" / "claim_measure.py"),
        run=lambda wc, input: str(Path(input.grid).parent),
    log:
        f"results/logs/{SCALE}/claim/tome_seed{{seed}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/claim_tome/seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        "../envs/torch.yaml"
    shell:
        "python {params.script} --run {params.run} --tome-match {input.dart} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule claim_report:
    """reports/claim.html: table (mean +- std over seeds), verdicts, top-1 vs GMACs, partitions."""
    input:
        measures=lambda wc: claim_measures()[0],
    output:
        html="reports/claim.html",
        summary=f"results/{SCALE}/claim/summary.csv",
        verdicts=f"results/{SCALE}/claim/verdicts.csv",
    params:
        script=str(WORKFLOW_DIR / "scripts" / "claim_report.py"),
        roles=lambda wc: " ".join(claim_measures()[1]),
        outdir=lambda wc, output: str(Path(output.summary).parent),
        partition_run=lambda wc: f"runs/{SCALE}/{CLAIM_ROLES['dart_n']}/seed{CLAIM_SEEDS[0]}",
    log:
        f"results/logs/{SCALE}/claim/report.log",
    benchmark:
        f"results/{SCALE}/benchmarks/claim_report/report.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    shell:
        "python {params.script} --measures {input.measures} --roles {params.roles} "
        "--partition-run {params.partition_run} --outdir {params.outdir} --html {output.html} > {log} 2>&1"
