import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Runs every ``@pytest.mark.anyio`` test on both backends."""
    return request.param


@pytest.fixture(autouse=True)
def _no_server_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHUNTER_TOKEN (a CLI user's own, say) would make every in-process server ask for it."""
    monkeypatch.delenv("SHUNTER_TOKEN", raising=False)
