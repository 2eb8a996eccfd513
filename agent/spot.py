"""Spot-termination notices from the cloud's instance metadata service.

- AWS: ``GET http://169.254.169.254/latest/meta-data/spot/instance-action`` answers 200 (with the action)
  once a stop/terminate is scheduled, 404 before. (IMDSv2 needs a token: ``PUT /latest/api/token``.)
- GCP: ``GET http://metadata.google.internal/computeMetadata/v1/instance/preempted`` with
  ``Metadata-Flavor: Google`` answers ``TRUE`` once preempted.
- Azure: ``GET http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01`` with
  ``Metadata: true`` lists an event with ``EventType: Preempt``.

The URL is configurable, so tests (and unusual clouds) can serve their own.
"""

from __future__ import annotations

from typing import Literal

import httpx

Cloud = Literal["aws", "gcp", "azure"]

DEFAULT_URLS: dict[str, str] = {
    "aws": "http://169.254.169.254/latest/meta-data/spot/instance-action",
    "gcp": "http://metadata.google.internal/computeMetadata/v1/instance/preempted",
    "azure": "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01",
}


class SpotNoticeWatcher:
    def __init__(self, cloud: Cloud, url: str | None = None, *, timeout_s: float = 2.0) -> None:
        self.cloud = cloud
        self.url = url or DEFAULT_URLS[cloud]
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def _aws_token(self) -> dict[str, str]:
        base = self.url.split("/latest/", 1)[0]
        try:
            r = await self._http.put(
                f"{base}/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
            )
        except httpx.HTTPError:
            return {}
        return {"X-aws-ec2-metadata-token": r.text} if r.status_code == 200 else {}

    async def notice(self) -> bool:
        """True once the cloud has announced this instance's termination."""
        try:
            if self.cloud == "aws":
                r = await self._http.get(self.url, headers=await self._aws_token())
                return r.status_code == 200
            if self.cloud == "gcp":
                r = await self._http.get(self.url, headers={"Metadata-Flavor": "Google"})
                return r.status_code == 200 and r.text.strip().upper() == "TRUE"
            r = await self._http.get(self.url, headers={"Metadata": "true"})
            if r.status_code != 200:
                return False
            return any(e.get("EventType") == "Preempt" for e in r.json().get("Events", []))
        except (httpx.HTTPError, ValueError):
            return False
