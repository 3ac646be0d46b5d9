# Throughput and memory across batch sizes (`python -m bench.throughput`) and the tokenizer
# micro-benchmark. A benchmark holds every core of the machine (threads = all cores; on SLURM the
# profile adds --exclusive), so no other job runs beside it and disturbs the timings.


rule throughput:
    input:
        settings=sweep_settings,
        # a toy DART model's pretrained scorer trunk (its weights file is read when it is built)
        scorer_trunk=lambda wc: sorted({p for eid in SWEEPS[wc.sweep].get("experiments") or []
                                        for p in plan.scorer_weights_input(_run_config_obj(eid, SEEDS[0]))}),
    output:
        csv=f"results/{SCALE}/bench/{{sweep}}.csv",
        machine=f"results/{SCALE}/bench/{{sweep}}.machine.json",
    wildcard_constraints:
        # only the configured sweeps: results/<scale>/bench/tokenizer_split.csv is tokenizer_bench's
        sweep=plan.one_of(SWEEPS),
    params:
        models=lambda wc: plan.shell_join(plan.sweep_models(config, wc.sweep, TRAIN_CONFIGS, REPO)),
        batch_sizes=lambda wc: " ".join(str(b) for b in SWEEPS[wc.sweep]["batch_sizes"]),
        mode=lambda wc: SWEEPS[wc.sweep].get("mode", "infer"),
        device=SETTINGS.get("device", "auto"),
        extra=lambda wc: plan.shell_join(SWEEPS[wc.sweep].get("args", [])),
        machine_load=str(WORKFLOW_DIR / "scripts" / "machine_load.py"),
    log:
        f"results/logs/{SCALE}/bench/{{sweep}}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/throughput/{{sweep}}.tsv"
    threads: plan.all_cores(workflow)
    resources:
        gpu=one_gpu(),
        mem_mb=8000 if SCALE == "toy" else 64000,
        runtime=30 if SCALE == "toy" else 240,
    conda:
        "../envs/bench.yaml"
    shell:
        "python {params.machine_load} {output.machine} -- "
        "python -m bench.throughput --models {params.models} --batch-sizes {params.batch_sizes} "
        "--mode {params.mode} --device {params.device} --threads {threads} --no-progress "
        "{params.extra} --out {output.csv} > {log} 2>&1"


rule tokenizer_bench:
    input:
        settings=lambda wc: tracked("bench/tokenizer_split", {"device": SETTINGS.get("device", "auto"),
                                                              "args": SETTINGS.get("tokenizer_bench_args", [])}),
    output:
        f"results/{SCALE}/bench/tokenizer_split.csv",
    params:
        device=SETTINGS.get("device", "auto"),
        extra=plan.shell_join(SETTINGS.get("tokenizer_bench_args", [])),
    log:
        f"results/logs/{SCALE}/bench/tokenizer_split.log",
    benchmark:
        f"results/{SCALE}/benchmarks/tokenizer_bench.tsv"
    threads: plan.all_cores(workflow)
    resources:
        gpu=one_gpu(),
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/bench.yaml"
    shell:
        "python -m bench.tokenizer_split --device {params.device} --threads {threads} {params.extra} --out {output} > {log} 2>&1"
