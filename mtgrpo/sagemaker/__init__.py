"""The SageMaker container: ``python -m mtgrpo.sagemaker train`` (the image's ENTRYPOINT).

contract: the /opt/ml layout and its files -> TrainerConfig, ResourceConfig, RunPaths.
launcher: the plan (vLLM + accelerate/DeepSpeed processes per host) and its supervision.
checkpoints / callback: complete-only resume, SIGTERM saves, metrics continuity.
failure: output/failure and exit codes. job: the launcher side; worker: one training process.
"""
