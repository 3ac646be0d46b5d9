# Training and evaluation: `python -m dart.train` (torchrun with more than one GPU) and
# `python -m dart.evaluate`. A run folder is runs/<scale>/<experiment>/seed<seed>/; its metrics.json
# and checkpoint_last.pt are the training job's outputs (a deleted checkpoint reruns the training
# job, not only what reads it). Snakemake removes a job's outputs before rerunning it and after it
# fails, so `--resume` finds the last epoch under the checkpoint's second name,
# checkpoint_resume.pt (a hard link dart.train keeps): an interrupted run continues where it
# stopped. Both read the run's tracked config (results/<scale>/config/runs/...): a changed setting
# reruns the run, and the run starts afresh (workflow/scripts/prepare_run.py removes the files the
# previous run listed) instead of resuming a checkpoint trained under other settings.


rule train:
    input:
        config=run_config,
        data=lambda wc: data_ready(wc.exp),
        init=finetune_input,
        scorer_trunk=scorer_trunk_input,
    output:
        metrics=f"runs/{SCALE}/{{exp}}/seed{{seed}}/metrics.json",
        checkpoint=f"runs/{SCALE}/{{exp}}/seed{{seed}}/checkpoint_last.pt",
    params:
        run_dir=lambda wc, output: str(Path(output.metrics).parent),
        prepare=str(WORKFLOW_DIR / "scripts" / "prepare_run.py"),
        planned=lambda wc: run_config_sha1(wc.exp, wc.seed),
        launcher=lambda wc, resources: plan.launcher(resources.gpu),
        threads=lambda wc, threads: thread_override(threads),
    log:
        f"results/logs/{SCALE}/train/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/train/{{exp}}_seed{{seed}}.tsv"
    # off the paper scale, one thread per job: a run's numbers then do not depend on --cores (torch's
    # reductions change with the thread count), and two one-thread jobs fill 2 cores as well as one
    # two-thread job (the default DAG: 21:10 against 20:45 with two threads, same machine, before
    # the toy pairs were cut down; 13:46 for 54 jobs on 2026-11-26)
    threads: 1 if SCALE != "paper" else 8
    resources:
        gpu=gpus(),
        mem_mb=4000 if SCALE != "paper" else 64000,
        runtime=30 if SCALE != "paper" else 3 * 24 * 60,
    conda:
        "../envs/torch.yaml"
    shell:
        "(python {params.prepare} {params.run_dir} {input.config} {params.planned} && "
        "{params.launcher} dart.train --config {input.config} --output-dir {params.run_dir} --resume "
        "{params.threads}) > {log} 2>&1"


rule evaluate:
    input:
        config=run_config,
        metrics=f"runs/{SCALE}/{{exp}}/seed{{seed}}/metrics.json",
        checkpoint=f"runs/{SCALE}/{{exp}}/seed{{seed}}/checkpoint_last.pt",
    output:
        f"results/{SCALE}/eval/{{exp}}/seed{{seed}}.json",
    params:
        threads=lambda wc, threads: thread_override(threads),
    log:
        f"results/logs/{SCALE}/evaluate/{{exp}}_seed{{seed}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/evaluate/{{exp}}_seed{{seed}}.tsv"
    threads: 1 if SCALE != "paper" else 8
    resources:
        gpu=one_gpu(),
        mem_mb=4000 if SCALE != "paper" else 32000,
        runtime=15 if SCALE != "paper" else 120,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m dart.evaluate --config {input.config} --checkpoint {input.checkpoint} --out {output} "
        "{params.threads} > {log} 2>&1"
