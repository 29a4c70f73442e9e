from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from notes.models import Note


def add(request: HttpRequest) -> JsonResponse:
    note = Note.objects.create(text=request.POST["text"])
    return JsonResponse({"id": note.pk})


def listing(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"texts": list(Note.objects.values_list("text", flat=True))})


urlpatterns = [path("add/", add), path("list/", listing)]
