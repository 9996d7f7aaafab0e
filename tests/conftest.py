import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Runs every ``@pytest.mark.anyio`` test on both backends."""
    return request.param


@pytest.fixture(autouse=True)
def _no_server_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """SHUNTER_TOKEN (a CLI user's own, say) would make every in-process server ask for it."""
    monkeypatch.delenv("SHUNTER_TOKEN", raising=False)


@pytest.fixture(autouse=True)
def _shunter_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shunter serve`` keeps state in ``$SHUNTER_HOME``: never the developer's ~/.shunter in tests."""
    monkeypatch.setenv("SHUNTER_HOME", str(tmp_path_factory.mktemp("shunter-home")))
