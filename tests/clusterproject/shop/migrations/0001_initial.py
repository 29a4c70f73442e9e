from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
            ],
        ),
        # Names no model: runs where the app's cluster is (the default one).
        migrations.RunSQL("CREATE TABLE shop_note (id int)", "DROP TABLE shop_note"),
    ]
