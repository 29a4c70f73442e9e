"""The same checks written with pytest-django's db and transactional_db."""

from __future__ import annotations

from notes.models import Note


def test_db_fixture_sees_own_write(db, client):
    Note.objects.create(text="pytest db")
    assert Note.objects.get().text == "pytest db"
    assert client.get("/list/").json() == {"texts": ["pytest db"]}


def test_transactional_db_fixture_sees_own_write(transactional_db, client):
    client.post("/add/", {"text": "pytest tx"})
    assert list(Note.objects.values_list("text", flat=True)) == ["pytest tx"]
