"""CDSE identity against the sandbox's Keycloak: one login per process, refresh before the end, 401 handling,
credentials from settings, the environment or ~/.netrc."""

from __future__ import annotations

import threading

import pytest

from intake_clms.errors import CredentialsError, ServiceError
from intake_clms.net.http import HttpClient
from intake_clms.services.cdse import auth
from intake_clms.services.cdse.service import connect

from lifecycle.lifecycle_helpers import Lockstep


def _token_requests(sb) -> int:
    return sb.log.count(service="cdse", endpoint="token")


def test_one_login_for_many_requests_and_threads(cdse_env):
    clock = Lockstep(cdse_env)
    services = [connect({}, threading.Event(), clock) for _ in range(3)]  # three preloads of one process
    assert services[0].tokens is services[1].tokens is services[2].tokens
    url = cdse_env.env()["CDSE_DOWNLOAD_URL"].replace("/download/odata/v1", "/odata/v1") + "/Products"

    def work(svc):
        for _ in range(10):
            r = svc.http.request("GET", url, auth=svc.tokens, params={"$top": "1", "$filter": "Collection/Name eq 'CLMS'"})
            r.close()

    threads = [threading.Thread(target=work, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert services[0].tokens.logins == 1
    assert _token_requests(cdse_env) == 1


def test_one_second_tokens_across_a_long_run(cdse_still):
    cdse_env = cdse_still
    """Access tokens of 1 s, refresh tokens of 5 s, 600 requests over 10 sandbox minutes: every request is
    authorised, the access token is refreshed (never a login per request), and a new login happens only
    when the refresh token had ended."""
    st = cdse_env.ctx.state["cdse"]
    st.access_lifetime, st.refresh_lifetime = 1, 5
    clock = Lockstep(cdse_env)
    svc = connect({}, threading.Event(), clock)
    tm = svc.tokens
    download = cdse_env.env()["CDSE_DOWNLOAD_URL"]
    pid = svc.catalogue.get(f"{svc.odata_url}/Products", {"$filter": "Collection/Name eq 'CLMS'", "$top": "1"})["value"][0]["Id"]
    refused = 0
    for i in range(600):
        r = svc.http.request("GET", f"{download}/Products({pid})/$value", auth=tm, allow_redirects=False, ok=(307, 401))
        refused += r.status_code == 401
        r.close()
        clock.sleep(1.0)  # one sandbox second per request: every access token ends during the run
    assert refused == 0
    assert tm.logins == 1  # refresh tokens were renewed with every refresh: one session all along
    assert tm.refreshes >= 550
    # now let the refresh token end too: the next request logs in again, once
    clock.sleep(6.0)
    r = svc.http.request("GET", f"{download}/Products({pid})/$value", auth=tm, allow_redirects=False, ok=(307,))
    r.close()
    assert tm.logins == 2


def test_a_401_refreshes_once_then_fails_loudly(cdse_env):
    svc = connect({}, threading.Event(), Lockstep(cdse_env))
    st = cdse_env.ctx.state["cdse"]
    pid = svc.catalogue.get(f"{svc.odata_url}/Products", {"$filter": "Collection/Name eq 'CLMS'", "$top": "1"})["value"][0]["Id"]
    url = f"{svc.download_url}/Products({pid})/$value"
    svc.tokens.headers()
    st.expire_access()  # the server refuses every token issued so far
    r = svc.http.request("GET", url, auth=svc.tokens, allow_redirects=False, ok=(307,))
    r.close()
    assert svc.tokens.refreshes == 1 and svc.tokens.logins == 1

    class Refuses:  # a server that refuses even the renewed token
        def headers(self):
            return {"Authorization": "Bearer not-a-token"}

        renewals = 0

        def renew(self):
            Refuses.renewals += 1

    with pytest.raises(ServiceError) as err:
        svc.http.request("GET", url, auth=Refuses(), allow_redirects=False, ok=(307,), what="download")
    assert err.value.status == 401 and "Invalid token" in err.value.message
    assert Refuses.renewals == 1


def test_renew_by_many_threads_refreshes_once(cdse_env):
    tm = connect({}, threading.Event(), Lockstep(cdse_env)).tokens
    tm.headers()
    barrier = threading.Barrier(6)

    def hit():
        tm.headers()
        barrier.wait()
        tm.renew()  # every thread saw a 401 of the same token

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tm.refreshes == 1 and tm.logins == 1


def test_wrong_password_is_a_credentials_error_without_the_password(cdse_env, monkeypatch):
    monkeypatch.setenv("CDSE_PASSWORD", "wrong-secret-value")
    svc = connect({}, threading.Event(), Lockstep(cdse_env))
    with pytest.raises(CredentialsError) as err:
        svc.tokens.headers()
    assert "Invalid user credentials" in str(err.value) and "sandbox-user@example.org" in str(err.value)
    assert "wrong-secret-value" not in str(err.value) and "wrong-secret-value" not in repr(svc.tokens)


def test_totp_is_sent_when_given(cdse_env, monkeypatch):
    st = cdse_env.ctx.state["cdse"]
    user, password = cdse_env.credentials["cdse"]["username"], cdse_env.credentials["cdse"]["password"]
    st.users = {user: {"password": password, "totp": "123456"}}
    with pytest.raises(CredentialsError):
        connect({}, threading.Event(), Lockstep(cdse_env)).tokens.headers()
    auth.forget_managers()
    monkeypatch.setenv("CDSE_TOTP", "123456")
    assert connect({}, threading.Event(), Lockstep(cdse_env)).tokens.headers()["Authorization"].startswith("Bearer ")


def test_credentials_order_settings_env_netrc(cdse_env, monkeypatch, tmp_path):
    url = cdse_env.env()["CDSE_TOKEN_URL"]
    assert auth.read_credentials(url, {"username": "a", "password": "b"})[:2] == ("a", "b")
    assert auth.read_credentials(url, {})[0] == "sandbox-user@example.org"
    monkeypatch.delenv("CDSE_USERNAME")
    monkeypatch.delenv("CDSE_PASSWORD")
    with pytest.raises(CredentialsError, match="CDSE_USERNAME and CDSE_PASSWORD"):
        auth.read_credentials(url, {})
    from intake_clms.config import available_services

    assert "cdse" not in available_services()
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login sandbox-user@example.org password sandbox-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert auth.read_credentials(url, {})[:2] == ("sandbox-user@example.org", "sandbox-password")
    assert "cdse" in available_services()
    svc = connect({}, threading.Event(), Lockstep(cdse_env))  # the netrc login works against the server
    assert svc.tokens.headers()["Authorization"].startswith("Bearer ")


def test_token_endpoint_retries_are_bounded(cdse_env):
    cdse_env.faults.add("status", service="cdse", endpoint="token", status=503, times=None)
    tm = auth.TokenManager(cdse_env.env()["CDSE_TOKEN_URL"], "u", "p", clock=Lockstep(cdse_env))
    tm.http = HttpClient("cdse", attempts=3, backoff=0.01, clock=tm.clock)
    with pytest.raises(ServiceError) as err:
        tm.headers()
    assert err.value.status == 503
    assert _token_requests(cdse_env) == 3
