import dicomnode


def test_exported_members_are_pinned():
    assert sorted(dicomnode.__all__) == ["ConfigError", "DicomnodeError", "__version__"]
