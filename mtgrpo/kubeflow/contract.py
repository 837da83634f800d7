"""What the rendered Kubeflow resources and the image agree on (standard library only).

The renderer (:mod:`mtgrpo.kubeflow.render`) mounts the rendered ConfigMap at
:data:`CONFIG_DIR` and sets the environment below; the image's Kubeflow mode
(:mod:`mtgrpo.kubeflow.job`) reads them. Both import this module, so they cannot drift apart.
"""

from __future__ import annotations

# The ConfigMap's mount point and its two keys.
CONFIG_DIR = "/etc/mtgrpo"
HYPERPARAMETERS_KEY = "hyperparameters.json"  # the static trainer hyperparameters (strings)
PLATFORM_KEY = "kubeflow.json"  # channels -> S3 URIs, output_path, checkpoint_s3_uri
CONFIG_DIR_ENV = "MTGRPO_KUBEFLOW_CONFIG_DIR"  # tests point it at a temporary directory

# Tuned hyperparameters of a Katib trial: MTGRPO_HP_<name>=<value>, over the ConfigMap's.
TUNED_ENV_PREFIX = "MTGRPO_HP_"
# The TrainJob's name (the JobSet's, from the pod label), naming the job's S3 prefixes.
JOB_NAME_ENV = "MTGRPO_JOB_NAME"
JOB_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"

# The image's entry point, spelled out: Katib's metrics collector needs an explicit command.
COMMAND = ("python", "-m", "mtgrpo.sagemaker", "train")
CONTAINER = "node"  # the only container a TrainJob's trainer overrides reach
REPLICATED_JOB = "node"
TERMINATION_LOG = "/dev/termination-log"
SHM_DIR = "/dev/shm"

# PET_* variables the torch runtime injects into the node container.
PET_NNODES = "PET_NNODES"
PET_NODE_RANK = "PET_NODE_RANK"
PET_MASTER_ADDR = "PET_MASTER_ADDR"
PET_MASTER_PORT = "PET_MASTER_PORT"
PET_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
PET_VARIABLES = (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT,
                 PET_NPROC_PER_NODE)
