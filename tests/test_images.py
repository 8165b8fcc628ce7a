"""Images: the CLI, labels, and (Docker) every offered language image's canaries — a contract
test over every `languages/*.toml`: an offered language whose image is not built fails."""

from __future__ import annotations

import pytest
from test_execute_support import offered_language

from harness.cli import main
from harness.execute import images
from harness.execute.languages import all_languages, load_language

pytest_plugins = ("test_execute_support",)


def test_build_contexts_exist_for_base_and_every_language():
    assert (images.context_dir("base") / "Dockerfile").is_file()
    for lang in all_languages():
        text = (images.context_dir(lang.key) / "Dockerfile").read_text()
        assert "FROM ${BASE}" in text, f"containers/{lang.key}/Dockerfile must build on the base image"


def test_a_build_sees_containers_shared_only_when_its_dockerfile_copies_from_it():
    """containers/shared/ travels in the java and scala contexts (and so in their images'
    hashes: such an image is stale when a shared file changes), in no other."""
    for key in ("java", "scala"):
        files = dict(images.context_files(key))
        assert "Dockerfile" in files and files["shared/WarmRequests.java"].read_bytes()
    assert [name for name, _ in images.context_files("py")] == ["Dockerfile"]
    assert not any(name.startswith("shared/") for name, _ in images.context_files("base"))


def test_images_cli_without_docker_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    assert main(["images", "check", "py"]) == 2
    err = capsys.readouterr().err.strip()
    assert "make docker" in err and "\n" not in err


@pytest.mark.docker
def test_py_image_is_labelled_with_its_toolchain(docker_client, py_image):
    image = images.language_image(docker_client, load_language("py"))
    labels = images.image_labels(image)
    assert image.id == py_image
    assert labels["org.flora-eval.toolchain"].startswith("Python 3.")
    assert labels["org.flora-eval.dockerfile"] == images.dockerfile_hash("py")
    base = images.find_image(docker_client, images.BASE_TAG)
    assert base is not None and images.image_labels(base)["org.flora-eval.image"] == "base"


@pytest.mark.docker
def test_build_is_a_no_op_when_built_and_list_shows_it(py_image, capsys):
    assert main(["images", "build", "py"]) == 0
    assert py_image[:19] in capsys.readouterr().out
    assert main(["images", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("py\t"))
    assert "Python 3." in line and "stale" not in line


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", [lang.key for lang in all_languages()])
def test_image_canaries(key, docker_client, capsys):
    """`flora-eval images check LANG` passes: known-good OK, known-bad not OK."""
    offered_language(key)
    code = main(["images", "check", key])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"{key}\tok")


def test_an_offered_language_without_its_image_fails_and_only_jl_dart_skip(monkeypatch):
    """CI must execute every offered language: a missing image is a failure, never a skip."""
    monkeypatch.setattr("harness.execute.sandbox.docker_client", lambda: object())
    monkeypatch.setattr("harness.execute.images.language_image", lambda client, lang: None)
    with pytest.raises(pytest.fail.Exception, match=r"`make images` or `flora-eval images build rb`"):
        offered_language("rb")
    for key in ("jl", "dart"):
        with pytest.raises(pytest.skip.Exception, match=f"{key}: not offered"):
            offered_language(key)
