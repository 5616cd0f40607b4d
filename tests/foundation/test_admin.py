"""Every library model in use is in the admin, read-only, with its filters."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from django_escrow_connect import swappable
from django_escrow_connect.swappable import LIBRARY_MODELS
from tests.factories import make_account, make_task, make_user

pytestmark = pytest.mark.django_db


def registered_library_models():
    return [
        swappable.load(name)
        for name in LIBRARY_MODELS
        if swappable.load(name)._meta.app_label == "escrow_connect"
    ]


def test_every_unswapped_model_is_registered():
    models = registered_library_models()
    assert models
    for model in models:
        assert admin.site.is_registered(model), model


@pytest.fixture
def staff_client(client):
    user = make_user("admin", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_changelists_render(staff_client):
    customer, doer = make_user(), make_user()
    make_task(customer, payee_user=doer)
    make_account(owner_user=doer)
    for model in registered_library_models():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = staff_client.get(url)
        assert response.status_code == 200, url
        response = staff_client.get(url, {"q": "acct_"})
        assert response.status_code == 200, url


def test_stripe_mirrors_are_read_only(staff_client):
    account = make_account(owner_user=make_user())
    Account = type(account)
    url = reverse("admin:escrow_connect_connectedaccount_change", args=[account.pk])
    response = staff_client.get(url)
    assert response.status_code == 200
    assert b'name="stripe_account_id"' not in response.content
    model_admin = admin.site._registry[Account]
    assert "stripe_account_id" in model_admin.get_readonly_fields(None, account)
    assert not model_admin.has_add_permission(None)
    assert not model_admin.has_delete_permission(None, account)


def test_every_field_the_admin_shows_has_a_translatable_label():
    """The admin shows every field (all read-only): each the library defines
    has its own verbose_name, marked for translation, not one derived from the
    field's name. (The library's default models, swapped out or not.)"""
    from django.apps import apps
    from django.utils.functional import Promise

    unlabelled = []
    for name in LIBRARY_MODELS:
        model = apps.get_model(swappable.APP_LABEL, name)
        for field in model._meta.fields:
            if field.auto_created or field.primary_key:
                continue
            verbose_name = field.deconstruct()[3].get("verbose_name")
            if not isinstance(verbose_name, Promise):
                unlabelled.append(f"{model._meta.label}.{field.name}")
    assert not unlabelled, unlabelled
