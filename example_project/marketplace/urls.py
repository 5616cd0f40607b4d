from django.contrib.auth.views import LogoutView
from django.urls import path

from . import simulated_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.MarketplaceLoginView.as_view(), name="login"),
    path("login/demo/", views.demo_login, name="demo-login"),
    path("logout/", LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("tasks/new/", views.task_new, name="task-new"),
    path("tasks/<int:pk>/", views.task_detail, name="task-detail"),
    path("tasks/<int:pk>/bid/", views.task_bid, name="task-bid"),
    path("tasks/<int:pk>/pay/", views.task_pay, name="task-pay"),
    path("tasks/<int:pk>/pay/return/", views.task_pay_return, name="task-pay-return"),
    path("tasks/<int:pk>/complete/", views.task_complete, name="task-complete"),
    path(
        "tasks/<int:pk>/milestones/<int:milestone_id>/release/",
        views.task_release_milestone,
        name="task-release-milestone",
    ),
    path("tasks/<int:pk>/tips/", views.task_tip, name="task-tip"),
    path("tasks/<int:pk>/tips/<uuid:tip_id>/pay/", views.task_tip_pay, name="task-tip-pay"),
    path("tasks/<int:pk>/refund/", views.task_refund, name="task-refund"),
    path("tasks/<int:pk>/cancel/", views.task_cancel, name="task-cancel"),
    path("tasks/<int:task_id>/simulate-dispute/", simulated_views.dispute, name="task-dispute"),
    path("bids/<int:pk>/accept/", views.bid_accept, name="bid-accept"),
    path("dashboard/doer/", views.dashboard_doer, name="dashboard-doer"),
    path("dashboard/customer/", views.dashboard_customer, name="dashboard-customer"),
    path("onboarding/", views.onboarding, name="onboarding"),
    path("onboarding/start/", views.onboarding_start, name="onboarding-start"),
    path("onboarding/refresh/", views.onboarding_refresh, name="onboarding-refresh"),
    path("onboarding/return/", views.onboarding_return, name="onboarding-return"),
    path("onboarding/dashboard/", views.onboarding_dashboard, name="onboarding-dashboard"),
    path("payouts/", views.my_payouts, name="my-payouts"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications-read"),
]
