# Training and evaluation: `python -m dart.train` (torchrun with more than one GPU) and
# `python -m dart.evaluate`. A run folder is runs/<scale>/<experiment>/seed<seed>/; only its
# metrics.json is declared as output, so the checkpoints survive an interruption and
# `--resume` continues from checkpoint_last.pt.


rule train:
    input:
        config=lambda wc: TRAIN_CONFIGS[wc.exp],
        data=lambda wc: data_ready(wc.exp),
        init=finetune_input,
    output:
        f"runs/{SCALE}/{{exp}}/seed{{seed}}/metrics.json",
    params:
        run_dir=lambda wc, output: str(Path(output[0]).parent),
        launcher=lambda wc, resources: plan.launcher(resources.gpu),
        overrides=lambda wc, threads: train_overrides(wc, threads),
    log:
        f"results/logs/{SCALE}/train/{{exp}}_seed{{seed}}.log",
    threads: 2 if SCALE == "toy" else 8
    resources:
        gpu=gpus(),
        mem_mb=4000 if SCALE == "toy" else 64000,
        runtime=30 if SCALE == "toy" else 3 * 24 * 60,
    conda:
        "../envs/torch.yaml"
    shell:
        "{params.launcher} dart.train --config {input.config} --output-dir {params.run_dir} --resume "
        "{params.overrides} > {log} 2>&1"


rule evaluate:
    input:
        config=lambda wc: TRAIN_CONFIGS[wc.exp],
        metrics=f"runs/{SCALE}/{{exp}}/seed{{seed}}/metrics.json",
    output:
        f"results/{SCALE}/eval/{{exp}}/seed{{seed}}.json",
    params:
        checkpoint=lambda wc, input: str(Path(input.metrics).parent / "checkpoint_last.pt"),
        overrides=lambda wc, threads: train_overrides(wc, threads, finetune=False),
    log:
        f"results/logs/{SCALE}/evaluate/{{exp}}_seed{{seed}}.log",
    threads: 2 if SCALE == "toy" else 8
    resources:
        gpu=one_gpu(),
        mem_mb=4000 if SCALE == "toy" else 32000,
        runtime=15 if SCALE == "toy" else 120,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m dart.evaluate --config {input.config} --checkpoint {params.checkpoint} --out {output} "
        "{params.overrides} > {log} 2>&1"
