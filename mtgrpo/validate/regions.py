"""``job.region``: one of the regions botocore's endpoint data lists for SageMaker.

The region becomes the ACK annotation ``services.k8s.aws/region``, which the controller uses
as is: a misspelt region fails only after ``kubectl apply``. botocore ships the endpoint data
offline, in every partition (aws, aws-cn, aws-us-gov, ...).
"""

from __future__ import annotations

import functools
import json
import os

from mtgrpo.errors import Problem, did_you_mean


@functools.lru_cache(maxsize=1)
def sagemaker_regions() -> frozenset[str]:
    """Every region botocore's endpoint data lists a SageMaker endpoint in, across all
    partitions: what ``Session.get_available_regions`` answers (the regional endpoint names),
    read with the plain JSON reader (botocore's own builds ordered dicts: twice as slow, and
    this runs on every render)."""
    import botocore
    import botocore.loaders

    from mtgrpo.ack.shapes import service_model

    prefix = service_model().metadata["endpointPrefix"]  # "api.sagemaker"
    try:
        with open(os.path.join(botocore.BOTOCORE_ROOT, "data", "endpoints.json"),
                  encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError:  # a botocore laid out otherwise: its own loader finds the file
        data = botocore.loaders.create_loader().load_data("endpoints")
    return frozenset(name for partition in data["partitions"]
                     for name in partition["services"].get(prefix, {}).get("endpoints", {})
                     if name in partition["regions"])


def check_region(region: object, source: str, key: str) -> list[Problem]:
    if region is None:
        return []  # missing or mistyped: the schema reports it
    regions = sagemaker_regions()
    if region in regions:
        return []
    shown = repr(region) if isinstance(region, str) and len(region) <= 64 else "the value"
    aws = sorted(r for r in regions if "-iso" not in r)
    return [Problem(source, key, f"{shown} is not a region with SageMaker"
                    + did_you_mean(str(region), aws),
                    f"one of {len(regions)} regions botocore knows for SageMaker, e.g. "
                    + ", ".join(r for r in ("us-east-1", "us-west-2", "eu-west-1")
                                if r in regions))]
