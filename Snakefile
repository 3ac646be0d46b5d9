# The card's entry point: `snakemake --cores 8 --use-conda all`, `snakemake reports/paper_tables.html`
# from the repository root. The workflow itself lives in workflow/ (rules, scripts, envs, profiles);
# `profiles/` here links to workflow/profiles so that Snakemake finds the default profile beside
# this file too.


include: "workflow/Snakefile"
# Snakemake keeps an included file's `default_target` to that file: make `all` the default here too.
workflow.default_target = "all"
