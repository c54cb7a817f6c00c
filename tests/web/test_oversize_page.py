"""Without JavaScript, an upload over the limit is refused with a page a person can read, not JSON."""


def test_form_post_over_the_limit_gets_a_readable_page(client):
    too_big = b"\xff\xd8" + b"\0" * 21_000_000
    response = client.post(
        "/analyses", files={"file": ("big.jpg", too_big, "image/jpeg")}, headers={"Accept": "text/html"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "The upload is larger than the limit of 20,000,000 bytes." in response.text
    assert '<a href="/">' in response.text


def test_the_api_still_answers_json(client):
    response = client.post(
        "/api/v1/analyses",
        files={"file": ("big.jpg", b"\0" * 21_000_000, "image/jpeg")},
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 20,000,000 bytes"}
