from django.urls import path

from . import views

urlpatterns = [
    path("books/", views.book_list),
    path("books/<int:book_id>/", views.book_detail),
    path("loans/", views.loan_create),
    path("loans/<int:loan_id>/return/", views.loan_return),
    path("members/<int:member_id>/loans/", views.member_loans),
]
