import synth


def test_public_api_is_small_and_sorted():
    assert synth.__all__ == sorted(synth.__all__)
    public = {n for n in dir(synth) if not n.startswith("_")} - {
        "api",
        "errors",
        "spec",
        "defaults",
        "providerspec",
        "enginespec",
        "guard",
        "records",
        "providers",
        "generators",
        "engine",
        "retrieval",
        "fakegen",
        "fakeembed",
        "tokens",
        "simulator",
        "cli",
        "dryrun",
        "dryreport",
        "outcome",
        "plugins",
        "dataset",
        "inspect",
        "export",
        "refdocs",
        "starter",
        "jobscli",
        "quick",
        "streaming",
        "generatecli",
        "benchcli",
    }
    assert public == set(synth.__all__) - {"__version__"}
