import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Runs every ``@pytest.mark.anyio`` test on both backends."""
    return request.param
