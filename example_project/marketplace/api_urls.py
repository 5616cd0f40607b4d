from django.urls import path

from . import api

urlpatterns = [
    path("tasks/", api.TaskListView.as_view(), name="api-task-list"),
    path("tasks/<int:pk>/", api.TaskDetailView.as_view(), name="api-task-detail"),
    path("tasks/<int:pk>/bids/", api.BidCreateView.as_view(), name="api-bid-create"),
    path("bids/<int:pk>/accept/", api.BidAcceptView.as_view(), name="api-bid-accept"),
]
