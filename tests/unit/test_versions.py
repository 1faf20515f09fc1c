import pytest

from bridge.domain.versions import SERVER_VERSION, ApiVersion, parse_version


@pytest.mark.parametrize("v", ["v6.20220315", "v6.20220615", "v4.20190315", "v5.20191215", "v7.20230615",
                               "v8.20240915"])
def test_v4_to_v8_are_accepted(v):
    assert str(parse_version(v)) == v


@pytest.mark.parametrize("v", ["v3.20170615", "v9.20250722", "6.20220615", "v6.2022061", "v6.20221340", "", "x"])
def test_others_are_refused_with_a_reason(v):
    with pytest.raises(ValueError):
        parse_version(v)


def test_versions_order_like_the_client_compares_them():
    assert parse_version("v6.20220315") < parse_version(SERVER_VERSION) < ApiVersion(7, "20230615")
