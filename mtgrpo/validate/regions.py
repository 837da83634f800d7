"""``job.region``: one of the regions botocore's endpoint data lists for SageMaker.

The region becomes the ACK annotation ``services.k8s.aws/region``, which the controller uses
as is: a misspelt region fails only after ``kubectl apply``. botocore ships the endpoint data
offline, in every partition (aws, aws-cn, aws-us-gov, ...).
"""

from __future__ import annotations

import functools

from mtgrpo.errors import Problem, did_you_mean


@functools.lru_cache(maxsize=1)
def sagemaker_regions() -> frozenset[str]:
    """Every region botocore knows a SageMaker endpoint in, across all partitions (what
    ``Session.get_available_regions`` answers, without building a session's resolver)."""
    import botocore.loaders
    import botocore.regions

    from mtgrpo.ack.shapes import service_model

    prefix = service_model().metadata["endpointPrefix"]  # "api.sagemaker"
    data = botocore.loaders.create_loader().load_data("endpoints")
    resolver = botocore.regions.EndpointResolver(data)
    return frozenset(region for partition in resolver.get_available_partitions()
                     for region in resolver.get_available_endpoints(prefix, partition))


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
