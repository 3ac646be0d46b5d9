# Parameters and GMACs of every paper model at full size (`python -m bench.complexity`): cheap on a
# CPU, so counted at every scale. One job per model family (deit, vim, videomamba): a process start
# (torch + timm imports) costs more than most counts, and a changed row recounts only its family.


rule complexity:
    input:
        settings=complexity_settings,
    output:
        "results/complexity/{family}.csv",
    params:
        specs=lambda wc: plan.shell_join(
            plan.complexity_spec(EXPERIMENTS[e]) for e in COMPLEXITY_GROUPS[wc.family]
        ),
    log:
        "results/logs/complexity/{family}.log",
    benchmark:
        f"results/{SCALE}/benchmarks/complexity/{{family}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m bench.complexity {params.specs} --threads {threads} --out {output} > {log} 2>&1"
