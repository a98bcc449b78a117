"""The ThoughtSpot-style path end to end on uvicorn: an organisation's admin configures its preference over HTTP,
search answers it in ThoughtSpot's shape, and the next on-demand job delivers on the chosen channel only."""

from __future__ import annotations

import httpx

from tests.api.test_api_jobs_e2e import BODY, api_url, key, wait_until_finished

__all__ = ["api_url"]  # the uvicorn fixture, shared with the jobs end-to-end test

CONFIGURE = "/v1/preferences/communication-channels/configure"
SEARCH = "/v1/preferences/communication-channels/search"


def test_an_org_preference_set_over_http_chooses_the_channels_of_its_next_job(api_url: str) -> None:
    admin = {"x-api-key": key("acme", "admin")}
    with httpx.Client(base_url=api_url, headers=admin, timeout=60) as http:
        body = {
            "org_preferences": [
                {
                    "org_identifier": "acme",
                    "operation": "REPLACE",
                    "preferences": [{"event_type": "REPORT_JOB", "channels": ["S3"]}],
                }
            ]
        }
        assert http.post(CONFIGURE, json=body).status_code == 204
        found = http.post(SEARCH, json={"org_preferences": [{"org_identifier": "acme"}]}).json()
        (org,) = found["org_preferences"]
        assert org["org"]["id"] == "acme"
        assert org["preferences"] == [{"event_type": "REPORT_JOB", "channels": ["S3"]}]

        job = {**BODY, "job_id": "e2e-prefs", "recipients": ["rm-emea-north"]}
        job.pop("output")
        assert http.post("/v1/jobs", json=job).status_code == 202
        assert wait_until_finished(http, "e2e-prefs")["status"] == "COMPLETED"
        manifest = http.get("/v1/jobs/e2e-prefs/result").json()
    (delivery,) = manifest["deliveries"]
    outcomes = {a["channel"]: a["outcome"] for a in delivery["artifacts"]}
    assert outcomes["s3"] == "sent" and outcomes.get("email") != "sent", outcomes
