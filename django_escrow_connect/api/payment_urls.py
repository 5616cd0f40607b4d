"""Routes of the payment API (names are used with the ``escrow_connect`` namespace).

Payment ids are matched as plain strings and parsed by the views, so a
malformed id is a JSON 404 like any other unknown payment.
"""

from django.urls import path

from . import payments as views
from . import tips as tip_views

urlpatterns = [
    path("payments/", views.PaymentListView.as_view(), name="payment-list"),
    path("payments/create/", views.PaymentCreateView.as_view(), name="payment-create"),
    path(
        "payments/confirm/<str:payment_id>/",
        views.PaymentConfirmView.as_view(),
        name="payment-confirm",
    ),
    path("payments/<str:payment_id>/", views.PaymentDetailView.as_view(), name="payment-detail"),
    path(
        "payments/<str:payment_id>/refund/",
        views.PaymentRefundView.as_view(),
        name="payment-refund",
    ),
    path(
        "payments/<str:payment_id>/release/",
        views.PaymentReleaseView.as_view(),
        name="payment-release",
    ),
    path(
        "payments/<str:payment_id>/milestones/<str:milestone_id>/deliver/",
        views.MilestoneDeliverView.as_view(),
        name="milestone-deliver",
    ),
    path(
        "payments/<str:payment_id>/cancel/",
        views.PaymentCancelView.as_view(),
        name="payment-cancel",
    ),
    path(
        "payments/<str:payment_id>/retry/",
        views.PaymentRetryView.as_view(),
        name="payment-retry",
    ),
    path(
        "payments/<str:payment_id>/tips/",
        tip_views.TipListCreateView.as_view(),
        name="payment-tips",
    ),
    path(
        "payments/<str:payment_id>/saved-payment-method/",
        tip_views.SavedPaymentMethodView.as_view(),
        name="payment-saved-payment-method",
    ),
    path(
        "payments/<str:payment_id>/tips/<str:tip_id>/retry-transfer/",
        tip_views.TipRetryTransferView.as_view(),
        name="payment-tip-retry-transfer",
    ),
    path(
        "dashboard/task-doer/",
        views.TaskDoerDashboardView.as_view(),
        name="dashboard-task-doer",
    ),
    path("dashboard/customer/", views.CustomerDashboardView.as_view(), name="dashboard-customer"),
]
