# The resolution claim at toy scale (scales.<scale>.claim): every role's experiment trained with each
# claim seed (the generic `train` rule), measured on the validation split (metric, GMACs, partition
# measures; one job per experiment, all seeds), ToMe applied to the trained grid_4n model at DART-N's
# GMACs, the same grid-vs-DART pair on the segmentation and video sets (claim.tasks), then
# reports/claim.html with the verdicts. Absent `claim` section: nothing here is built.

include: "claim_plan.smk"


if not CLAIM:

    rule claim_report:
        """Asked for at a scale without a claim section: say what the claim is and where it runs."""
        input:
            lambda wc: no_claim_here(),
        output:
            "reports/claim.html",
        localrule: True
        shell:
            "false"


else:

    rule claim_measure:
        """Validation metric, GMACs and partition measures of one experiment's trained runs (all seeds)."""
        input:
            metrics=lambda wc: claim_runs(wc.exp),
        output:
            f"results/{SCALE}/claim/measure/{{exp}}.json",
        params:
            script=str(WORKFLOW_DIR / "scripts" / "claim_measure.py"),
            runs=lambda wc, input: " ".join(str(Path(m).parent) for m in input.metrics),
        log:
            f"results/logs/{SCALE}/claim/measure_{{exp}}.log",
        benchmark:
            f"results/{SCALE}/benchmarks/claim_measure/{{exp}}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
        conda:
            "../envs/torch.yaml"
        shell:
            "python {params.script} --runs {params.runs} --threads {threads} --out {output} > {log} 2>&1"


    rule claim_tome:
        """ToMe on the trained full-resolution grid (no retraining), r matched to DART-N's GMACs per seed."""
        input:
            grid=lambda wc: claim_runs(CLAIM_ROLES["grid_4n"]),
            dart=lambda wc: f"results/{SCALE}/claim/measure/{CLAIM_ROLES['dart_n']}.json",
        output:
            f"results/{SCALE}/claim/tome.json",
        params:
            script=str(WORKFLOW_DIR / "scripts" / "claim_measure.py"),
            runs=lambda wc, input: " ".join(str(Path(m).parent) for m in input.grid),
        log:
            f"results/logs/{SCALE}/claim/tome.log",
        benchmark:
            f"results/{SCALE}/benchmarks/claim_tome/tome.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
        conda:
            "../envs/torch.yaml"
        shell:
            "python {params.script} --runs {params.runs} --tome-match {input.dart} --threads {threads} "
            "--out {output} > {log} 2>&1"


    rule claim_report:
        """reports/claim.html (workflow/templates/claim.html.j2): verdicts, tables (mean +- std over
        seeds), top-1 vs GMACs, partitions; summary.csv and verdicts.csv (the main report reads these)."""
        input:
            measures=lambda wc: claim_measures()[0],
            templates=[str(WORKFLOW_DIR / "templates" / t) for t in ("claim.html.j2", "base.html.j2")],
        output:
            html="reports/claim.html",
            summary=f"results/{SCALE}/claim/summary.csv",
            verdicts=f"results/{SCALE}/claim/verdicts.csv",
        params:
            script=str(WORKFLOW_DIR / "scripts" / "claim_report.py"),
            roles=lambda wc: " ".join(claim_measures()[1]),
            outdir=lambda wc, output: str(Path(output.summary).parent),
            partition_run=lambda wc: f"runs/{SCALE}/{CLAIM_ROLES['dart_n']}/seed{CLAIM_SEEDS[0]}",
            scale=SCALE,
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
            "--partition-run {params.partition_run} --outdir {params.outdir} --html {output.html} "
            "--scale {params.scale} > {log} 2>&1"


    rule claim_ablation:
        """The ablation (claim.ablation): DART-N with other scorer trunks and conventions, every claim
        seed, measured. A named target, not part of `all`; the next `snakemake all` (or
        reports/claim.html) shows it on the claim page."""
        input:
            measures=lambda wc: [f"results/{SCALE}/claim/measure/{eid}.json" for eid in CLAIM_ABLATION.values()],
        output:
            touch(ABLATION_DONE),
