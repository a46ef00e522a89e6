"""What a training run writes so that it can be watched while it runs (rank 0 only):

* ``<log>/train_losses.csv``: every logged iteration (``common.utils.run_csv``), appended at
  the end of each epoch;
* ``<log>/training.png``: the loss curves and, once evaluations exist, the metrics per
  evaluated epoch (``common.utils.training_figure``), redrawn at the end of each epoch;
* TensorBoard scalars under ``<log>/tensorboard`` (``loss/<term>``, ``loss/total``, ``lr``)
  when the optional ``tensorboard`` package is installed; otherwise one log line says so.
"""
import os

from common.utils import run_csv
from common.utils.training_figure import write_training_figure

TENSORBOARD_DIR = 'tensorboard'
TENSORBOARD_MISSING = ('TensorBoard scalars are off: the tensorboard package is not installed '
                       '(pip install tensorboard to get them); the losses still go to {csv} and {png}.')


def make_tensorboard_writer(folder, logger):
    """A ``torch.utils.tensorboard.SummaryWriter`` writing into ``folder``, or None (with one
    info line to ``logger``) when tensorboard cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log_dir = os.path.dirname(folder)
        logger.info(TENSORBOARD_MISSING.format(csv=os.path.join(log_dir, run_csv.LOSS_FILE),
                                               png=os.path.join(log_dir, 'training.png')))
        return None
    return SummaryWriter(folder)


class TrainingMonitor:
    """The watched records of one training run in ``log_dir``; ``logger`` gets the one-line
    notes (no tensorboard, a figure that could not be drawn)."""

    def __init__(self, log_dir, logger):
        self.log_dir = str(log_dir)
        self.logger = logger
        self.loss_csv = run_csv.LossCsv(os.path.join(self.log_dir, run_csv.LOSS_FILE))
        self.tb_writer = make_tensorboard_writer(os.path.join(self.log_dir, TENSORBOARD_DIR), logger)
        self.figure_failed = False

    def carry_over(self, earlier_log_dir, epoch):
        """Start this run's CSV with the rows of ``earlier_log_dir``'s ``train_losses.csv``
        before ``epoch`` (a run resumed at ``epoch``), so the curves continue."""
        path = os.path.join(str(earlier_log_dir), run_csv.LOSS_FILE)
        columns, rows = run_csv.loss_rows_before(path, epoch)
        if columns and rows:
            self.loss_csv.carried = (columns, rows)
            self.logger.info(f'{len(rows)} logged iterations of {path} (epochs before {epoch}) '
                             f'start {self.loss_csv.path}.')

    def record(self, epoch, iteration, step, lr, losses):
        """One trained iteration: ``losses`` ``{term: float}`` (batch means), ``lr`` the logged
        learning rate, ``step`` the global step."""
        self.loss_csv.add(epoch, iteration, step, lr, losses)
        if self.tb_writer is not None:
            for key, value in losses.items():
                self.tb_writer.add_scalar(f'loss/{key}', value, step)
            self.tb_writer.add_scalar('loss/total', sum(losses.values()), step)
            self.tb_writer.add_scalar('lr', lr, step)

    def end_epoch(self):
        """Append the epoch's rows to the CSV and redraw the figure.  A figure that cannot be
        drawn is reported once and never stops training."""
        self.loss_csv.flush()
        if self.tb_writer is not None:
            self.tb_writer.flush()
        try:
            write_training_figure(self.log_dir)
        except Exception as exc:  # the picture is a convenience; the CSV holds the data
            if not self.figure_failed:
                self.logger.warning(f'Could not draw {os.path.join(self.log_dir, "training.png")}: {exc}')
            self.figure_failed = True

    def close(self):
        """Write what is still buffered and close the TensorBoard writer."""
        self.loss_csv.flush()
        if self.tb_writer is not None:
            self.tb_writer.close()
            self.tb_writer = None
