"""Running a benchmark on a Slurm cluster, through Ray (`lhdbench slurm`, docs/cluster.md).

submit.py   the command: checks, the job script, sbatch, the chain in the store
options.py  the user's sbatch options: split, checked, turned into #SBATCH lines
script.py   the job script: a Ray head on the first node, a worker per other node, the driver, Ray gone
job.py      the steps the script runs on the nodes (store check, chaining, waiting for Ray, the summary)
ray_node.py one supervised Ray node
chain.py    STORE/slurm.json: the chains of jobs, and their states for `lhdbench status`

The stop on Slurm's warning signal (SIGUSR1) or SIGTERM is the runner's (lhdbench/runner/stop.py).
"""
