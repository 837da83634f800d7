"""boto3 clients, and the failures a user can fix (no credentials, no region) as one-line errors."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from mtgrpo.errors import Problem, Unreachable, UserError


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    from botocore.exceptions import (BotoCoreError, ClientError, EndpointConnectionError,
                                     NoCredentialsError, NoRegionError, PartialCredentialsError)

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as err:
        raise UserError(Problem("AWS credentials", what, f"{err}",
                                "AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO, "
                                "an instance or pod role")) from None
    except NoRegionError:
        raise UserError(Problem("AWS region", what, "no region: the job's status names none "
                                "and none is configured", "AWS_REGION or AWS_DEFAULT_REGION")) from None
    except EndpointConnectionError as err:
        raise Unreachable(Problem("AWS", what, f"cannot reach the endpoint: {err}")) from None
    except ClientError as err:
        error = err.response.get("Error", {})
        raise UserError(Problem("AWS", what, f"{error.get('Code', 'error')}: "
                                f"{error.get('Message', err)}")) from None
    except BotoCoreError as err:  # the rest of botocore's own errors: config, parameters
        raise UserError(Problem("AWS", what, str(err))) from None


def client(service: str, region: str = ""):
    """A boto3 client from a fresh session: credentials are looked up now, not cached from an
    earlier call in the same process (boto3's default session keeps the first ones it found)."""
    import boto3

    return boto3.session.Session().client(service, region_name=region or None)
