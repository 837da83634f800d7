"""``mtgrpo logs``: a training job's CloudWatch logs, one stream per host, interleaved by time.

SageMaker writes each host's stdout/stderr to log group ``/aws/sagemaker/TrainingJobs``, stream
``<job name>/algo-<N>-<epoch>``. Each stream is read from its head with ``GetLogEvents`` and its
forward token; the streams' events are merged by timestamp (stable: a tie keeps stream order).
With ``follow`` it polls until the job has finished, then reads once more so nothing written at
the end is lost.
"""

from __future__ import annotations

import heapq
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from mtgrpo.errors import Problem, UserError

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_HOST = re.compile(r"^(algo-\d+)(?:-\d+)?$")


@dataclass
class LogReader:
    """Reads new events of one job's streams; remembers where each stream left off."""

    client: Any  # boto3 CloudWatch Logs client
    job_name: str
    tokens: dict[str, str] = field(default_factory=dict)
    stream_count: int = 0

    def streams(self) -> list[str]:
        names: list[str] = []
        paginator = self.client.get_paginator("describe_log_streams")
        try:
            for page in paginator.paginate(logGroupName=LOG_GROUP,
                                           logStreamNamePrefix=f"{self.job_name}/"):
                names.extend(s["logStreamName"] for s in page.get("logStreams", []))
        except self.client.exceptions.ResourceNotFoundException:
            return []  # the group appears with the first job of the account and region
        return sorted(names, key=_host_order)

    def new_events(self) -> list[tuple[int, str, str]]:
        """(timestamp ms, host, message) of everything written since the last call, by time."""
        per_stream = []
        streams = self.streams()
        self.stream_count = len(streams)
        for order, stream in enumerate(streams):
            host = host_of(stream)
            per_stream.append([(e["timestamp"], order, host, e["message"])
                               for e in self._read(stream)])
        return [(ts, host, msg) for ts, _, host, msg in heapq.merge(*per_stream)]

    def _read(self, stream: str) -> Iterator[dict]:
        while True:
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in self.tokens:
                kwargs["nextToken"] = self.tokens[stream]
            page = self.client.get_log_events(**kwargs)
            yield from page.get("events", [])
            token = page.get("nextForwardToken")
            if not token or token == self.tokens.get(stream):
                return
            self.tokens[stream] = token
            if not page.get("events"):
                return


def host_of(stream: str) -> str:
    """``job/algo-2-1700000000`` -> ``algo-2``."""
    tail = stream.rsplit("/", 1)[-1]
    match = _HOST.match(tail)
    return match.group(1) if match else tail


def _host_order(stream: str) -> tuple:
    host = host_of(stream)
    number = host.rsplit("-", 1)[-1]
    return (int(number) if number.isdigit() else 1 << 30, stream)


def print_logs(reader: LogReader, write: Callable[[str], None], *, follow: bool = False,
               running: Callable[[], bool] = lambda: False, poll_s: float = 5.0) -> int:
    """Print the logs (and, following, keep printing while ``running()``); the number of lines."""
    count = 0
    while True:
        still_running = follow and running()  # asked before reading: one last read after the end
        events = reader.new_events()
        for _, host, message in events:
            prefix = f"[{host}] " if reader.stream_count > 1 else ""
            write(prefix + message.rstrip("\n"))
            count += 1
        if not still_running:
            break
        time.sleep(poll_s)
    if reader.stream_count == 0:
        raise UserError(Problem(LOG_GROUP, reader.job_name, "no log streams for this job "
                                "(has it started? is the region right?)",
                                "a job that has reached the Training secondary status"))
    return count


def logs_client(region: str):
    from mtgrpo.operate.aws import client

    return client("logs", region)
