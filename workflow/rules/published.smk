# The published weights, evaluated here: every official DART checkpoint (timm tag
# `<model>.official_in1k`, Hugging Face yinkx3/DART) and the grid baselines' timm weights, on the
# validation split of `scales.<scale>.published_weights.dataset`, with the official evaluation
# (dart/configs/imagenet_official_eval.yaml: DeiT's transform at the checkpoint's input size, fp32,
# main.py's validation batch). The files come from `official_checkpoints` (a local folder), else
# from the Hugging Face hub or its local cache; at the smoke scale from made-up checkpoints in the
# published files' layouts (built from tests/data/official_state_dicts.txt).

rule evaluate_published:
    """Top-1 of one published checkpoint (dart.evaluate --pretrained <name.tag>)."""
    input:
        config=published_settings,
        data=published_data,
        checkpoint=published_checkpoint,
    output:
        f"results/{SCALE}/published/{{name}}/eval.json",  # eval.log beside it
    wildcard_constraints:
        name=plan.one_of(PUBLISHED_WEIGHTS),
    params:
        file=lambda wc, input: f"--checkpoint {input.checkpoint[0]}" if input.checkpoint else "",
        threads=lambda wc, threads: thread_override(threads),
    log:
        f"results/logs/{SCALE}/evaluate_published/{{name}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/evaluate_published/{{name}}.tsv"
    threads: 1 if SCALE != "paper" else 8
    resources:
        gpu=one_gpu(),
        mem_mb=6000 if SCALE != "paper" else 32000,
        runtime=15 if SCALE != "paper" else 60,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m dart.evaluate --config {input.config} --pretrained {wildcards.name} {params.file} "
        "--out {output} {params.threads} > {log} 2>&1"


rule published_synthetic:
    """A made-up checkpoint in a published file's layout (smoke scale): official DART files as
    DeiT's main.py saves them (model, model_ema, optimizer, args, ...), baselines as safetensors."""
    input:
        layouts=str(REPO / "tests" / "data" / "official_state_dicts.txt"),
    output:
        temp(f"data/fake/{SCALE}/published/{{file}}"),
    wildcard_constraints:
        file=plan.one_of(PUBLISHED_FILES),
    params:
        script=str(WORKFLOW_DIR / "scripts" / "synthetic_checkpoint.py"),
        name=lambda wc: PUBLISHED_FILES[wc.file],
    log:
        f"results/logs/{SCALE}/published_synthetic/{{file}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/published_synthetic/{{file}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    shell:
        "python {params.script} --name {params.name} --layouts {input.layouts} --out {output} > {log} 2>&1"


rule published_weights:
    """Target: every published-weights evaluation of this scale, and nothing else
    (`snakemake --cores 1 published_weights --config scale=smoke`)."""
    input:
        published_outputs(),
    localrule: True
