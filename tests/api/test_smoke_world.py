def test_world_builds_with_every_role(world):
    assert {p.role for p in world.people.values()} == {"patient", "caregiver", "clinician", "admin", "gateway"}
