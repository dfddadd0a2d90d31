"""Bearer tokens over HTTP: company tokens, service tokens naming a company, and each
company's jobs, events and datasets kept apart."""

from __future__ import annotations

from typing import Any

from dataplane.auth import TokenTable
from tests.dataplane.dp_support import EVENTS_CSV, Client, PlaneFactory, Running, sse_events

TOKENS = TokenTable.of(
    company_tokens={"tok-acme": "acme", "tok-globex": "globex"},
    service_tokens={"tok-svc": "workflowd"},
)
VIEW = {"nql": "SELECT 1 AS x", "dataset_name": "v"}


def _as(plane: Running, token: str | None, company: str | None = None) -> Client:
    headers = {} if company is None else {"X-Workflowd-Company": company}
    return Client(plane.client.url, plane.client.session, token, headers)


async def _world(start_plane: PlaneFactory) -> tuple[Running, dict[str, dict[str, Any]]]:
    """A plane where acme and globex each loaded a dataset and ran a job."""
    plane = await start_plane(tokens=TOKENS)
    jobs = {}
    for company in ("acme", "globex"):
        client = _as(plane, f"tok-{company}")
        await client.load_csv(f"{company}_events", EVENTS_CSV)
        jobs[company] = await client.run("materialize-view", {**VIEW, "dataset_name": company})
    return plane, jobs


async def _sees(client: Client) -> tuple[list[str], list[str]]:
    """The dataset names and job ids a client can list."""
    _, datasets = await client.request("GET", "/datasets")
    _, jobs = await client.request("GET", "/jobs")
    return (
        [d["dataset_name"] for d in datasets["records"]],
        [j["job_id"] for j in jobs["records"]],
    )


async def test_a_company_token_reaches_its_own_company_only(start_plane: PlaneFactory) -> None:
    plane, jobs = await _world(start_plane)
    acme, globex = _as(plane, "tok-acme"), _as(plane, "tok-globex")
    assert await _sees(acme) == (["acme_events", "acme"], [jobs["acme"]["job_id"]])
    assert await _sees(globex) == (["globex_events", "globex"], [jobs["globex"]["job_id"]])
    acme_job = jobs["acme"]["job_id"]
    assert await globex.problem("GET", f"/jobs/{acme_job}", 404) == f"no job {acme_job}"
    assert await globex.problem("POST", f"/jobs/{acme_job}/cancel", 404) == f"no job {acme_job}"
    assert await globex.problem("GET", "/datasets/acme", 404) == "no dataset 'acme'"
    # Each company's event log holds its own changes only.
    async with plane.client.session.get(
        f"{plane.client.url}/jobs/events?last_event_id=0", headers=globex.headers
    ) as response:
        events = [e async for e in sse_events(response, limit=3)]
    assert {e["data"]["job_id"] for e in events} == {jobs["globex"]["job_id"]}
    assert [int(e["id"]) for e in events] == [1, 2, 3], "event ids are per company"
    # Naming its own company is fine; naming another is refused.
    assert await _sees(_as(plane, "tok-acme", "acme")) == await _sees(acme)
    detail = await _as(plane, "tok-acme", "globex").problem("GET", "/datasets", 403)
    assert detail == "this token belongs to another company"
    assert plane.query("SELECT count(*) FROM company_data.acme_events", "acme") == [(100,)]
    assert plane.journal("SELECT count(*) FROM jobs", "globex") == [(1,)]


async def test_a_service_token_acts_for_the_company_it_names(start_plane: PlaneFactory) -> None:
    plane, jobs = await _world(start_plane)
    for company, other in (("acme", "globex"), ("globex", "acme")):
        service = _as(plane, "tok-svc", company)
        assert await _sees(service) == ([f"{company}_events", company], [jobs[company]["job_id"]])
        await service.problem("GET", f"/jobs/{jobs[other]['job_id']}", 404)
    # A service creates what it names, in that company's own database.
    initech = _as(plane, "tok-svc", "initech")
    job = await initech.run("materialize-view", {**VIEW, "dataset_name": "initech"})
    assert job["state"] == "completed"
    assert plane.query("SELECT count(*) FROM company_data.initech", "initech") == [(1,)]
    assert await _sees(_as(plane, "tok-acme")) == await _sees(_as(plane, "tok-svc", "acme"))


async def test_a_service_token_must_name_a_well_formed_company(
    start_plane: PlaneFactory,
) -> None:
    plane = await start_plane(tokens=TOKENS)
    service = _as(plane, "tok-svc")
    detail = await service.problem("GET", "/jobs", 400)
    assert detail == "a service token must name the company in X-Workflowd-Company"
    for bad in ("Acme", "acme/../globex", "", "x" * 65):
        detail = await service.problem("GET", "/jobs", 400, headers={"X-Workflowd-Company": bad})
        assert "is not a company name" in detail, bad
    twice = [("X-Workflowd-Company", "acme"), ("X-Workflowd-Company", "globex")]
    async with plane.client.session.get(
        plane.client.url + "/jobs", headers=[("Authorization", "Bearer tok-svc"), *twice]
    ) as response:
        assert response.status == 400
        assert "must be given once" in (await response.json())["detail"]
    # A malformed header is the caller's mistake whatever the token.
    await _as(plane, "tok-acme", "ACME").problem("GET", "/jobs", 400)


async def test_a_missing_or_unknown_token_is_401(start_plane: PlaneFactory) -> None:
    plane = await start_plane(tokens=TOKENS)
    for client, detail in [
        (_as(plane, None), "an 'Authorization: Bearer <token>' header is required"),
        (_as(plane, None, "acme"), "an 'Authorization: Bearer <token>' header is required"),
        (_as(plane, "tok-nobody", "acme"), "the bearer token is not one this data plane knows"),
    ]:
        assert await client.problem("POST", "/jobs", 401, json={}) == detail
        async with client.session.get(client.url + "/jobs", headers=client.headers) as response:
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="dataplane"'
    basic = {"Authorization": "Basic dG9rLWFjbWU="}
    await _as(plane, None).problem("GET", "/datasets", 401, headers=basic)
    for open_path in ("/healthz", "/metrics"):
        async with plane.client.session.get(plane.client.url + open_path) as response:
            assert response.status == 200


async def test_without_tokens_every_request_is_company_default(dp: Running) -> None:
    named = _as(dp, "whatever", "acme")
    job = await named.run("materialize-view", VIEW)
    assert job["state"] == "completed"
    assert dp.query("SELECT count(*) FROM company_data.v", "default") == [(1,)]
    assert not (dp.data_dir / "acme.duckdb").exists()


async def test_replaced_tokens_apply_to_the_next_request(start_plane: PlaneFactory) -> None:
    plane = await start_plane(tokens=TOKENS)
    acme = _as(plane, "tok-acme")
    await acme.run("materialize-view", VIEW)
    plane.plane.set_tokens(TokenTable.of(company_tokens={"tok-acme-2": "acme"}))
    await acme.problem("GET", "/datasets", 401)
    assert await _sees(_as(plane, "tok-acme-2")) == (["v"], [await _only_job(plane)])


async def _only_job(plane: Running) -> str:
    [(job_id,)] = plane.journal("SELECT job_id FROM jobs", "acme")
    return str(job_id)
