from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import Bid, Membership, Notification, Organization, Task, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "name", "password1", "password2")}),
    )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "country"]
    inlines = [MembershipInline]


class BidInline(admin.TabularInline):
    model = Bid
    extra = 0
    fields = [
        "doer_user",
        "doer_organization",
        "partner_user",
        "partner_basis_points",
        "amount",
        "currency",
        "milestones",
        "accepted",
        "accepted_at",
    ]
    readonly_fields = fields


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "customer", "status", "payment_status", "created_at"]
    list_filter = ["status", "payment_status"]
    readonly_fields = ["status", "payment_status"]
    inlines = [BidInline]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["user", "kind", "message", "created_at", "read_at"]
    list_filter = ["kind"]
