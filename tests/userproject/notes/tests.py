"""A user's unchanged Django tests: writes, then routed reads."""

from __future__ import annotations

from django.db import router
from django.test import TestCase, TransactionTestCase

from notes.models import Note


class NotesTestCase(TestCase):
    def test_sees_own_write_through_routed_read(self):
        Note.objects.create(text="hello")
        self.assertEqual(list(Note.objects.values_list("text", flat=True)), ["hello"])

    def test_client_post_then_get(self):
        self.client.post("/add/", {"text": "via client"})
        self.assertEqual(self.client.get("/list/").json(), {"texts": ["via client"]})


class NotesTransactionTestCase(TransactionTestCase):
    def test_sees_committed_write_through_routed_read(self):
        Note.objects.create(text="committed")
        self.assertEqual(router.db_for_read(Note), "default")
        self.assertTrue(Note.objects.filter(text="committed").exists())

    def test_client_post_then_get(self):
        self.client.post("/add/", {"text": "tx client"})
        self.assertEqual(self.client.get("/list/").json(), {"texts": ["tx client"]})


class EveryDatabaseTestCase(TransactionTestCase):
    """A suite that names every database, as multi-database suites do."""

    databases = "__all__"

    def test_writes_then_reads_with_every_database_declared(self):
        Note.objects.create(text="everywhere")
        self.assertEqual(Note.objects.get().text, "everywhere")
