"""The domain's email rule answers as the API's marshmallow ``fields.Email`` does: an account made outside the API
(the command line, an admin) must have an email the API's routes accept."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError, validate

from companion.domain.people import is_email_address

ADDRESSES = [
    "sam@example.org", "first.last@example.org", "first..last@example.org", ".first@example.org",
    "first.@example.org", "first+tag@example.org", "o'neil@example.org", '"quoted name"@example.org',
    "sam@localhost", "sam@[192.0.2.1]", "sam@[192.0.2.256]", "sam@example", "sam@example.o", "sam@-example.org",
    "sam@example-.org", "sam@exa_mple.org", "sam@example..org", "sam@example.org.", "sam@bücher.de",
    "jörg@example.org", "sam@@example.org", "@example.org", "sam@", "sam", "", "sam @example.org",
    "dr.okafor at clinic", "a@b.co", f"{'a' * 64}@{'b' * 63}.org", f"{'a' * 250}@b.org",
]


def _marshmallow_says(address: str) -> bool:
    try:
        validate.Email()(address)
        validate.Length(max=254)(address)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_domain_takes_an_email_exactly_when_the_api_does(address):
    assert is_email_address(address) is _marshmallow_says(address)
