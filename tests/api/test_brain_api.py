def test_areas_run_from_the_eye_to_it_and_every_fact_has_a_source(client):
    body = client.get("/api/v1/brain/areas").json()
    assert [area["id"] for area in body["data"]] == ["LGN", "V1", "V2", "V4", "PIT", "IT"]
    cited = {citation["key"] for citation in body["citations"]}
    for area in body["data"]:
        assert area["facts"], area["id"]
        for fact in area["facts"]:
            assert fact["source"].strip() and fact["refs"], fact
            assert set(fact["refs"]) <= cited
            assert fact["evidence"] in ("verified", "derived")
            if fact["evidence"] == "derived":
                assert fact["method"]


def test_v1_field_sizes_come_from_cavanaugh_2002(client):
    v1 = next(area for area in client.get("/api/v1/brain/areas").json()["data"] if area["id"] == "V1")
    size = next(fact for fact in v1["facts"] if fact["kind"] == "rf_size")
    assert size["numbers"]["rf_deg_median_min"] == 0.5 and size["numbers"]["rf_deg_median_max"] == 1.0
    assert size["source"].startswith("Cavanaugh, Bair & Movshon 2002")


def test_comparisons_are_sourced(client):
    body = client.get("/api/v1/brain/comparisons").json()
    assert body["count"] == len(body["data"]) > 5
    assert all(item["source"].strip() for item in body["data"])
