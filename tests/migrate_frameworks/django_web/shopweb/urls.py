"""``/`` writes one customer and reads it back (the table the migrations change); ``/health``."""

import os

from django.http import HttpRequest, HttpResponse
from django.urls import path
from shop.models import Customer

RELEASE = os.environ.get("NONSTOP_RELEASE", "")


def index(request: HttpRequest) -> HttpResponse:
    customer = Customer.objects.create(email="someone@example.com")
    found = Customer.objects.filter(pk=customer.pk).count()
    return HttpResponse(f"customer={customer.pk} found={found}\n", headers={"X-Release": RELEASE})


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n")


urlpatterns = [path("", index), path("health", health)]
